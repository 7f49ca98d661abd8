"""Where a run's checkpoints go, and how they get there without stalling the step.

One serialization per save. `last.pt` is written atomically (temp file, fsync, rename) and,
when the epoch improved, `best.pt` becomes a hard link to the same bytes (a copy where the
filesystem has no links), never a second `torch.save`. The write happens on a background
thread: the training thread only takes a CPU snapshot of the state (a copy of the tensors, so
the next steps cannot change what is written) and goes on; at most one save is in flight, and
it is joined before the next save, before anything reads a checkpoint back, on a stop signal
and at exit. A run killed mid-write resumes from the previous checkpoint, exactly.

Under `trainer.strategy=fsdp` each save is a collective: every rank writes its own shards of a
new step directory and `checkpoints/last` (and `best`) are swapped to point at it
(launch/sharded_checkpoint.py); nothing is gathered on one rank.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch

from vitcli.core import runs, sharded
from vitcli.core.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger("vitcli")


def cpu_snapshot(tree: Any) -> Any:
    """A copy of a nested state on the CPU: tensors copied (never shared with the live ones)."""
    if torch.is_tensor(tree):
        return tree.detach().to("cpu", copy=True)
    if isinstance(tree, dict):
        return {k: cpu_snapshot(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(cpu_snapshot(v) for v in tree)
    return tree


def link_or_copy(source: Path, target: Path) -> None:
    """Make `target` the same bytes as `source`, atomically: a hard link (a copy where links are not
    allowed), renamed over the old target."""
    tmp = target.with_name(f".{target.name}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


class BackgroundWriter:
    """Runs one write at a time off the training thread; a failed write is raised at the next join."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.seconds = 0.0  # time the writes took (on the writer thread)
        self.waited = 0.0  # time the training thread spent waiting for a write to finish

    def submit(self, write: Callable[[], None]) -> None:
        self.join()

        def run() -> None:
            start = time.perf_counter()
            try:
                write()
            except BaseException as err:  # raised in the training thread at the next join
                self._error = err
            finally:
                self.seconds += time.perf_counter() - start

        self._thread = threading.Thread(target=run, name="vitcli-checkpoint", daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            start = time.perf_counter()
            self._thread.join()
            self.waited += time.perf_counter() - start
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise err


class Checkpointer:
    """A run's checkpoints: saved (rank 0's files, or every rank's shards) and read back for resume.

    Args:
        run_dir: the run directory (checkpoints/ inside it).
        rank: this process's rank (only rank 0 writes files; every rank writes shards).
        sharded: trainer.strategy=fsdp (a directory of shards per save).
        background: write .pt files on a background thread (false: in the training thread).
    """

    def __init__(self, run_dir: Path, rank: int = 0, sharded: bool = False, background: bool = True):
        self.dir = Path(run_dir) / runs.CHECKPOINTS
        self.rank, self.sharded = rank, sharded
        self.writer = BackgroundWriter() if background else None

    # ---- saving -------------------------------------------------------------------
    def save_file(self, state: dict[str, Any], best: bool) -> None:
        """Rank 0: last.pt from `state` (and best.pt the same bytes when `best`). On the background
        writer the tensors are copied first, here: what is written is the state of this moment."""
        last, best_path = self.dir / "last.pt", self.dir / "best.pt"
        if self.writer is not None:
            state = cpu_snapshot(state)

        def write() -> None:
            save_checkpoint(state, last)
            if best:
                link_or_copy(last, best_path)

        if self.writer is None:
            write()
        else:
            self.writer.submit(write)

    def save_shards(self, step: int, tensors: dict[str, Any], meta: dict[str, Any], rng: dict[str, Any],
                    best: bool) -> None:
        """Every rank: this rank's shards of a new step directory; last (and best) point at it."""
        from vitcli.launch import sharded_checkpoint

        sharded_checkpoint.save(self.dir, ("last", "best") if best else ("last",), step, tensors, meta, rng, self.rank)

    def join(self) -> None:
        """Wait for the save in flight (raising its error, if any)."""
        if self.writer is not None:
            self.writer.join()

    @property
    def timing(self) -> dict[str, float]:
        """Seconds spent writing (background) and waiting for writes (training thread)."""
        if self.writer is None:
            return {}
        return {"write_s": round(self.writer.seconds, 3), "wait_s": round(self.writer.waited, 3)}

    # ---- reading back ---------------------------------------------------------------
    def last_path(self) -> Path:
        return runs.checkpoint_path(self.dir.parent, "last")

    def read_last(self, device: Any) -> dict[str, Any] | None:
        """What resume reads first: the whole last.pt, or a sharded checkpoint's state.json (its
        tensors are loaded later, by every rank together). None when there is no checkpoint."""
        self.join()
        path = self.last_path()
        if sharded.is_sharded(path):
            return {**sharded.read_state_json(path), "sharded_path": str(path.resolve())}
        if not path.is_file():
            return None
        return load_checkpoint(path, map_location=device)
