"""Writing and reading sharded checkpoints across ranks (`trainer.strategy=fsdp`).

Every rank calls `save` at the same point: each writes its own shards through
`torch.distributed.checkpoint`'s safetensors writer into a fresh `.step-<N>-<tag>.partial`
directory, then its RNG streams; rank 0 adds state.json, renames the directory into place and
swaps the `last` (and `best`) links to it. A run killed at any moment leaves the previous links
pointing at a complete checkpoint. The layout and the single-process reader live in
vitcli/core/sharded.py.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import torch

from vitcli.core import sharded
from vitcli.core.io import write_json
from vitcli.launch import comm

PARTIAL = ".partial"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _point(link: Path, target: str) -> None:
    """Make `link` a symlink to the sibling `target`, atomically (a new link renamed over the old)."""
    tmp = link.with_name(f".{link.name}.{secrets.token_hex(4)}")
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _collect(ckpt_dir: Path, links: tuple[str, ...] = ("last", "best")) -> None:
    """Remove step directories no link points at (and partial ones a killed save left)."""
    kept = {os.readlink(ckpt_dir / name) for name in links if (ckpt_dir / name).is_symlink()}
    for entry in ckpt_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink() and entry.name.startswith(("step-", ".step-")) \
                and entry.name not in kept:
            shutil.rmtree(entry, ignore_errors=True)


def save(ckpt_dir: Path, links: tuple[str, ...], step: int, tensors: dict[str, Any], meta: dict[str, Any],
         rng: dict[str, Any], rank: int) -> Path:
    """Write one sharded checkpoint and point `links` ("last", "best") at it. A collective.

    Args:
        ckpt_dir: the run's checkpoints/ directory.
        links: which names to point at the new checkpoint.
        step: the global step (part of the directory name, for people reading the folder).
        tensors: {"model": ..., "optimizer": ..., "model_ema": ...}: DTensors (this rank's shards) and
            plain tensors (replicated; written once), nested dicts allowed.
        meta: rank 0's JSON-able state (counters, best, config, class names); ignored on other ranks.
        rng: this rank's `core.rng.rng_state()`.
        rank: this process's rank.
    Returns:
        the new checkpoint directory.
    """
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageWriter

    name = comm.broadcast_from_main(f"step-{step:08d}-{secrets.token_hex(3)}")
    final, partial = ckpt_dir / name, ckpt_dir / f".{name}{PARTIAL}"
    if rank == 0:
        partial.mkdir(parents=True)
    comm.barrier()
    dcp.save(tensors, storage_writer=HuggingFaceStorageWriter(str(partial), save_distributed=True))
    rng_tensors, scalars = sharded.rng_tensors(rng)
    save_file(rng_tensors, str(partial / sharded.rng_file(rank)), metadata={"scalars": json.dumps(scalars)})
    _fsync_dir(partial)
    comm.barrier()  # every rank's files are in place
    if rank == 0:
        write_json(partial / sharded.STATE_JSON, meta)
        os.rename(partial, final)
        for link in links:
            _point(ckpt_dir / link, name)
        _fsync_dir(ckpt_dir)
        _collect(ckpt_dir)
    comm.barrier()  # no rank reads or saves again before the links are in place
    return final


def load(path: Path, template: dict[str, Any]) -> dict[str, Any]:
    """Fill `template` (this rank's DTensor shards and plain tensors, as `save` took them) from the
    checkpoint at `path`, resharding when it was written by another number of ranks. A collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageReader

    dcp.load(template, storage_reader=HuggingFaceStorageReader(str(Path(path).resolve())))
    return template


def tensors_only(state: dict[str, Any]) -> dict[str, Any]:
    """The tensor leaves of a nested state dict (optimizer param_groups and other numbers dropped:
    they are rebuilt from the config, or carried in state.json)."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, dict):
            inner = tensors_only(value)
            if inner:
                out[key] = inner
        elif torch.is_tensor(value):
            out[key] = value
    return out
