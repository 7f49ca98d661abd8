"""Finding the processes of a run: the torchrun workers that are a run's DDP or FSDP ranks."""

from __future__ import annotations

from pathlib import Path


def descendants(parent: int) -> list[int]:
    """Every process below `parent` (torchrun's workers start sessions of their own, so a process
    group does not hold them)."""
    found, todo = [], [parent]
    while todo:
        pid = todo.pop()
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            try:
                children = [int(c) for c in task.read_text().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


def kill_tree(parent: int, sig: int) -> None:
    """Send `sig` to `parent` and everything below it, children first found, then all at once."""
    import os

    for pid in [*descendants(parent), parent]:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def rank_pid(parent: int, rank: str) -> int | None:
    """The pid of DDP rank `rank` among the descendants of `parent` (torchrun's workers)."""
    todo, seen = [parent], set()
    while todo:
        pid = todo.pop()
        seen.add(pid)
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            todo += [int(c) for c in task.read_text().split() if int(c) not in seen]
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"LOCAL_RANK=" + rank.encode() in env and pid != parent:
            return pid
    return None
