"""Memory for `vitcli plan`: bytes counted from tensors (parameters, gradients, optimizer state; each
rank's local shard under FSDP) and the process's peak, measured on the run's device.

The peak is CUDA's max allocated bytes on a GPU and the process's peak resident set size (Linux
VmHWM, reset through /proc/self/clear_refs) on the CPU; before each CPU measurement the C heap
hands its free pages back (glibc malloc_trim), so a bigger batch tried earlier does not inflate it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os
import resource
import sys
from pathlib import Path
from typing import Any, Iterable

import torch

GB = 1024**3


def local_nbytes(t: torch.Tensor) -> int:
    """Bytes this process holds for `t`: its local shard when it is a DTensor (FSDP2), else all of it."""
    if hasattr(t, "to_local"):
        t = t.to_local()
    return t.numel() * t.element_size()


def _unique(tensors: Iterable[Any]) -> list[torch.Tensor]:
    seen, out = set(), []
    for t in tensors:
        if isinstance(t, torch.Tensor) and id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def param_bytes(model: torch.nn.Module) -> int:
    return sum(local_nbytes(p) for p in _unique(model.parameters()))


def grad_bytes(model: torch.nn.Module) -> int:
    return sum(local_nbytes(p.grad) for p in _unique(model.parameters()) if p.grad is not None)


def optimizer_bytes(optimizer: Any) -> int:
    """Every tensor in the optimizer's state (AdamW: exp_avg, exp_avg_sq and a scalar step per parameter)."""
    return sum(local_nbytes(t) for t in _unique(v for state in optimizer.state.values() for v in state.values()))


@functools.cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def trim_heap() -> None:
    """Hand the C heap's free pages back to the OS (glibc; a no-op elsewhere)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def _proc_status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class MemoryProbe:
    """The current and peak memory of this process on `device`, with a resettable peak.

    >>> probe = MemoryProbe(torch.device("cpu"))
    >>> probe.reset_peak(); now = probe.current()
    >>> probe.peak() >= now > 0
    True
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.kind = "cuda_max_allocated" if self.cuda else "cpu_peak_rss"

    @property
    def resettable(self) -> bool:
        """Whether the peak can be reset (CUDA, or Linux's /proc): find_batch on the CPU needs it."""
        return self.cuda or os.path.exists("/proc/self/clear_refs")

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        """Settle the heap and start a new peak from the memory in use now."""
        self.sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        trim_heap()
        try:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        except OSError:
            pass  # not Linux (or not allowed): the peak is the process's lifetime peak

    def current(self) -> int:
        if self.cuda:
            return torch.cuda.memory_allocated(self.device)
        kb = _proc_status_kb("VmRSS")
        return kb * 1024 if kb is not None else self.peak()

    def peak(self) -> int:
        self.sync()
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device)
        kb = _proc_status_kb("VmHWM")
        if kb is not None:
            return kb * 1024
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, KiB on Linux

    def release(self) -> None:
        """Free what a finished measurement left (reference cycles included) and what the allocator
        keeps cached (between find_batch trials)."""
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
        else:
            trim_heap()

    def available(self) -> int:
        """What this process could use: the GPU's total memory, or this process's RSS plus the RAM
        still available (MemAvailable, and the cgroup's limit in a container)."""
        if self.cuda:
            return torch.cuda.mem_get_info(self.device)[1]
        free = _meminfo_available()
        cgroup = _cgroup_headroom()
        if cgroup is not None:
            free = min(free, cgroup) if free is not None else cgroup
        if free is None:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return self.current() + free


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_headroom() -> int | None:
    """cgroup v2's memory.max minus memory.current (None: no limit, or not in a cgroup v2)."""
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(int(limit) - int((root / "memory.current").read_text()), 0)
    except (OSError, ValueError):
        return None
