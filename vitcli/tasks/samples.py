"""Which samples a picture shows and their model inputs: a seeded mix of mistakes and correct
predictions, the inputs at given indices of an unshuffled loader, and the user's own image files
through a run's eval transform. Used by `vitcli explain` and the error gallery of `vitcli eval`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from vitcli.core.errors import UserError
from vitcli.data.files import DECODE_ERRORS, load_rgb


def pick_samples(pred: np.ndarray, labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to `n` sample indices chosen with `seed`: about half mistakes (when there are any),
    the rest correct predictions; mistakes first. Samples without a label (< 0) count as correct."""
    rng = np.random.default_rng(seed)
    wrong = np.flatnonzero((labels >= 0) & (pred != labels))
    right = np.setdiff1d(np.arange(len(pred)), wrong)
    n = min(n, len(pred))
    n_wrong = min(len(wrong), max(n // 2, n - len(right)))
    chosen_wrong = rng.choice(wrong, n_wrong, replace=False) if n_wrong else wrong[:0]
    chosen_right = rng.choice(right, n - n_wrong, replace=False) if n - n_wrong else right[:0]
    return np.concatenate([np.sort(chosen_wrong), np.sort(chosen_right)]).astype(np.int64)


def gather_inputs(loader, indices: Sequence[int]):
    """The model inputs (normalized, as the unshuffled loader yields them) at `indices`, in that order."""
    wanted = {int(i): k for k, i in enumerate(indices)}
    found: dict[int, Any] = {}
    start = 0
    for x, _ in loader:
        for j in range(x.shape[0]):
            if start + j in wanted:
                found[wanted[start + j]] = x[j].detach().cpu()
        start += x.shape[0]
        if len(found) == len(wanted):
            break
    return torch.stack([found[k] for k in range(len(indices))]) if found else torch.empty(0)


def load_images(files: Sequence[Path], transform):
    """Decode and transform image files into one normalized batch (unreadable files are a UserError)."""
    out = []
    for f in files:
        try:
            out.append(transform(load_rgb(str(f))))
        except DECODE_ERRORS as err:
            raise UserError(f"images: cannot read {f} as an image ({err})") from err
    return torch.stack(out)
