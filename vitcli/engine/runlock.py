"""One writer per run directory: an exclusive `flock` on `<run>/.lock` while a run trains.

The kernel drops a flock when its process exits, however it exits (SIGKILL, OOM kill,
power loss of the node aside), so a stale lock file never blocks a rerun; the pid written
into it only serves the error message. Readers (eval, predict, explain) take no lock: the
files they read are replaced atomically.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from vitcli.core.errors import UserError

LOCK = ".lock"


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run dir's lock for the duration; UserError naming the holder's pid if taken."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise UserError(
            f"run dir {run_dir} is in use by another `vitcli train` (pid {holder}); wait for it to finish "
            "or stop it, or train into another directory (hydra.run.dir=...)"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
