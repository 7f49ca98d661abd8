"""One writer per run directory: an exclusive `flock` on `<run>/.lock` while a run trains;
and one run per run directory: its checkpoints are resumed only by the config that wrote them.

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

import yaml

from vitcli.core import runs
from vitcli.core.errors import UserError

LOCK = ".lock"


_held: list[int] = []  # the lock fd this process holds, closed in its forked children


def _release_in_child() -> None:
    """A forked child (a DataLoader worker) shares the lock's open file: close its copy, so the lock
    dies with the trainer even when a SIGKILLed trainer's workers linger for a moment."""
    for fd in _held:
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()


os.register_at_fork(after_in_child=_release_in_child)


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
        _held.append(fd)
        yield
    finally:
        if fd in _held:
            _held.remove(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# settings a rerun into the same run dir may change and still resume (a longer schedule; the data
# check is the command's own, not the run's)
RESUMABLE_CHANGES = ("trainer.epochs", "data_check")


def check_one_run(run_dir: Path, config_yaml: str) -> None:
    """Refuse to resume a run dir's checkpoints under another config (a SLURM job's run dir,
    slurm-<job id>, is shared by every `vitcli train` its batch script runs without srun; a
    reused hydra.run.dir likewise): UserError naming the first setting that differs."""
    run_dir = Path(run_dir)
    saved_path = run_dir / runs.CONFIG
    if not runs.has_checkpoint(run_dir, "last") or not saved_path.is_file():
        return
    saved = saved_path.read_text()
    if saved == config_yaml:
        return
    old, new = _flat(yaml.safe_load(saved)), _flat(yaml.safe_load(config_yaml))
    # a key the saved config lacks is a setting added to vitcli after the run was written, not a change
    differ = [k for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES
              and (k in old or k not in new)]
    if not differ:
        return
    key = differ[0]
    raise UserError(f"run dir {run_dir} holds a run trained with another config ({key}: {old.get(key)} there, "
                    f"{new.get(key)} now); continue it with `vitcli train resume={run_dir}`, or train into "
                    "another directory (hydra.run.dir=...)")


def _flat(tree: object, prefix: str = "") -> dict[str, object]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, object] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}."))
    return {k.rstrip("."): v for k, v in out.items()}
