"""Sharded checkpoints on disk (`trainer.strategy=fsdp`), and reading one back whole.

A sharded checkpoint is a directory that `torch.distributed.checkpoint` wrote with its
safetensors writer: every rank writes the shards it holds (`shard-0000R-*.safetensors`, the
offset of each shard in the file's JSON header), rank 0 adds `state.json` (counters, best result,
config, class names) and every rank its RNG streams (`rng-R.safetensors`). Nothing in it is a
pickle: tensors come from safetensors, the rest from JSON. (DCP's default writer pickles its
metadata and any non-tensor value, which a checkpoint must never make us unpickle.)

`checkpoints/last` and `checkpoints/best` are symlinks to such directories (`step-<N>-<tag>`), so
a save is atomic (directory renamed, then the link swapped) and best costs no second write.
This module only reads; writing is a collective of all ranks (vitcli/launch/sharded_checkpoint.py).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

from vitcli.core.errors import UserError

STATE_JSON = "state.json"
SHARD_GLOB = "shard-*.safetensors"


def rng_file(rank: int) -> str:
    return f"rng-{rank}.safetensors"


def is_sharded(path: Path) -> bool:
    """A sharded checkpoint directory (or a link to one)."""
    return Path(path).is_dir() and (Path(path) / STATE_JSON).is_file()


def read_state_json(path: Path) -> dict[str, Any]:
    try:
        state = json.loads((Path(path) / STATE_JSON).read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path}/{STATE_JSON} is not readable ({err}); the checkpoint is incomplete") from err
    if not isinstance(state, dict):
        raise UserError(f"{path}/{STATE_JSON} is not a vitcli checkpoint state")
    return state


def full_tensors(path: Path, prefixes: tuple[str, ...] = ("model.", "model_ema.")) -> dict[str, torch.Tensor]:
    """Every tensor under `prefixes`, assembled whole from all ranks' shards, in this process alone
    (no process group needed: eval, predict and export read FSDP runs this way).

    Returns:
        {"model.<key>": tensor, ...} with the full shapes the writer recorded.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageReader

    path = Path(path)
    if not any(path.glob(SHARD_GLOB)):
        raise UserError(f"{path} holds no shard files; the checkpoint is incomplete")
    meta = HuggingFaceStorageReader(str(path)).read_metadata()
    out = {key: torch.empty(m.size, dtype=m.properties.dtype) for key, m in meta.state_dict_metadata.items()
           if key.startswith(prefixes)}
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(out, storage_reader=HuggingFaceStorageReader(str(path)), no_dist=True)
    return out


def load_whole(path: Path) -> dict[str, Any]:
    """A sharded checkpoint as the dict a `.pt` checkpoint holds (model and EMA weights whole,
    counters, class names, config), without the optimizer state: what inference needs."""
    state = read_state_json(path)
    tensors = full_tensors(path)
    for prefix in ("model", "model_ema"):
        part = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        if part:
            state[prefix] = part
    if "model" not in state:
        raise UserError(f"{path} holds no model weights")
    return state


def read_rng(path: Path, rank: int) -> dict[str, Any] | None:
    """This rank's RNG streams as `core.rng.rng_state()` returns them (None when not saved)."""
    from safetensors import safe_open

    file = Path(path) / rng_file(rank)
    if not file.is_file():
        return None
    state: dict[str, Any] = {}
    with safe_open(str(file), framework="pt") as f:
        # "cuda.0", "cuda.1", ...: one generator per GPU, back into a list in GPU order
        for key in sorted(f.keys(), key=lambda k: (k.partition(".")[0], int(k.partition(".")[2] or -1))):
            name, _, index = key.partition(".")
            if index:
                state.setdefault(name, []).append(f.get_tensor(key))
            else:
                state[name] = f.get_tensor(key)
        state.update(json.loads((f.metadata() or {}).get("scalars", "{}")))
    return state


def rng_tensors(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """`rng_state()` split for a safetensors file: (tensors, lists as "name.i"; JSON scalars)."""
    tensors, scalars = {}, {}
    for key, value in state.items():
        if torch.is_tensor(value):
            tensors[key] = value.contiguous()
        elif isinstance(value, (list, tuple)):
            tensors.update({f"{key}.{i}": v.contiguous() for i, v in enumerate(value)})
        else:
            scalars[key] = value
    return tensors, scalars
