"""Checkpoints and exported weights: atomic writes (temp file, fsync, rename) and safe loads.

Loads use `torch.load(weights_only=True)`: a file that carries pickled Python
objects is refused with a clear error instead of being executed. A run's best
weights are also written as model.safetensors, which plain timm loads.

`file_key` names a checkpoint by its content: what calibration.json and
predictions/<split>.npz are keyed to, so a best.pt rewritten by a resumed run
never inherits the temperature or the predictions of the one it replaced.

A checkpoint is written once per save: best.pt is the same bytes as the last.pt of the epoch
that improved (a hard link), and says in `best_weights` which entry holds the best weights
("model", or "model_ema" when the EMA copy won). Under trainer.strategy=fsdp a checkpoint is a
directory of shards (core/sharded.py); `load_checkpoint` reads either whole.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save

from vitcli.core.errors import UserError
from vitcli.core.io import atomic_write
from vitcli.core.sharded import is_sharded, load_whole


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


BEST_WEIGHTS = "best_weights"  # the entry of a checkpoint loaded as best.pt that holds the best weights


def best_entry(state: dict[str, Any]) -> str:
    """"model" or "model_ema": where a checkpoint loaded as best keeps its best weights (files written
    before best.pt became a link of last.pt hold them in "model")."""
    entry = str(state.get(BEST_WEIGHTS, "model"))
    return entry if entry in ("model", "model_ema") and entry in state else "model"


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict[str, Any]:
    """A vitcli checkpoint as a dict of plain tensors and numbers (mmap: tensors read on first use).
    A sharded checkpoint (a directory) is read whole, without its optimizer state."""
    path = Path(path)
    if is_sharded(path):
        return load_whole(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise UserError(
            f"refusing to load {path}: it holds pickled Python objects that weights_only loading does not allow "
            "(only load checkpoints you trust, and re-save them as plain tensors)"
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise UserError(f"{path} is not a readable checkpoint ({str(err).splitlines()[0]})") from err
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(f"{path} is not a vitcli checkpoint (no 'model' entry)")
    return state


def save_safetensors(state_dict: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Weights as a .safetensors file (what timm's pretrained loader reads), written atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    data = save(tensors, metadata=metadata)
    atomic_write(Path(path), lambda f: f.write(data))


_KEYS: dict[tuple[str, int, int, int], str] = {}  # (path, inode, size, mtime) -> key: one hash per file version


def file_key(path: Path) -> str:
    """`sha256:` and 16 hex digits of the file's bytes (about a second per GB; once per file version).
    A sharded checkpoint is named by its directory, which a save never writes twice."""
    if is_sharded(Path(path)):
        return "step:" + Path(path).resolve().name
    st = os.stat(path)
    version = (str(Path(path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if version not in _KEYS:
        with open(path, "rb") as f:
            _KEYS[version] = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()[:16]
    return _KEYS[version]
