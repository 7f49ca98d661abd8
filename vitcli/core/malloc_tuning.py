"""glibc's allocator told to keep the training step's buffers instead of handing them back each step.

Each CPU training step frees and re-allocates the same activation and gradient buffers (a few
hundred KB to a few MB each). glibc serves any block over its mmap threshold (128 KB at start)
with a fresh `mmap` and returns it with `munmap` on free, and trims the heap top back to the
kernel above 128 KB free; so every step pays page faults to zero the same memory again. glibc
raises the threshold by itself only as blocks are freed, and never above 32 MB. `tune()` sets from
the start what PyTorch's CPU performance guide gets from jemalloc or tcmalloc: blocks under 32 MB
come from the heap and freed heap is kept up to 1 GB (`mallopt`, the calls behind the
`MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` variables). On the default run (2 cores):
2.7-3.3 million page faults -> 0.17 million, 96.0 -> 84.5 s (docs/guides/performance.md). The cost:
up to 1 GB of freed memory stays with the process instead of going back to the system.

Left alone where the user chose: a `MALLOC_*` or `GLIBC_TUNABLES` variable set, an allocator in
`LD_PRELOAD`, or `VITCLI_MALLOC_TUNING=0`; and off glibc (macOS, Windows, musl) there is nothing to set.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h parameter numbers
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's own ceiling for its dynamic threshold (64-bit)
TRIM_THRESHOLD = 1024 * 1024 * 1024  # freed heap kept before it is returned to the system

_tuned: bool | None = None  # the outcome of this process's first tune()


def user_chose(env: dict[str, str] | os._Environ[str] | None = None) -> str | None:
    """The variable by which the user already chose the allocator or its settings, if any.

    >>> user_chose({"MALLOC_ARENA_MAX": "2"})
    'MALLOC_ARENA_MAX'
    >>> user_chose({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"})
    'LD_PRELOAD'
    >>> user_chose({"VITCLI_MALLOC_TUNING": "0"})
    'VITCLI_MALLOC_TUNING'
    >>> user_chose({"PATH": "/usr/bin", "VITCLI_MALLOC_TUNING": "1"}) is None
    True
    """
    env = os.environ if env is None else env
    for name in sorted(env):
        if name.startswith("MALLOC_") or name == "GLIBC_TUNABLES" or (name == "LD_PRELOAD" and env[name].strip()):
            return name
    if env.get("VITCLI_MALLOC_TUNING", "1").strip().lower() in ("0", "false", "no", "off"):
        return "VITCLI_MALLOC_TUNING"
    return None


def tune() -> bool:
    """Set the mmap and trim thresholds once per process (glibc only); True when they were set.

    Safe to call again: later calls return the first outcome. Forked loader workers inherit it.
    """
    global _tuned
    if _tuned is None:
        _tuned = False
        if sys.platform.startswith("linux") and user_chose() is None:
            libc = _glibc()
            if libc is not None:
                # mallopt returns 1 on success, 0 when glibc refused the value
                _tuned = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
                    libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
                )
    return _tuned


def tuned() -> bool:
    """Whether this process's allocator thresholds were set by `tune()` (summary.json `malloc_tuned`)."""
    return bool(_tuned)


def _glibc() -> ctypes.CDLL | None:
    """The C library of this process when it is glibc (it has `gnu_get_libc_version`), else None."""
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols (no ldconfig lookup): its C library's among them
        libc.gnu_get_libc_version  # noqa: B018  (musl has mallopt but not this)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        return libc
    except (OSError, AttributeError):
        return None
