"""Pictures of samples: choosing them, fetching their model inputs, reading the user's
image files, and drawing captioned grids (optionally with a heat-map overlay).

Shared by `vitcli explain` (vitcli/explain.py) and the error gallery of `vitcli eval`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vitcli.core.errors import UserError


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
    import torch

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
    import torch

    from vitcli.data.files import DECODE_ERRORS, load_rgb

    out = []
    for f in files:
        try:
            out.append(transform(load_rgb(str(f))))
        except DECODE_ERRORS as err:
            raise UserError(f"images: cannot read {f} as an image ({err})") from err
    return torch.stack(out)


def denormalize(x, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalized (B, 3, H, W) tensor -> (B, H, W, 3) floats in [0, 1] for display."""
    import torch

    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x.detach().float().cpu() * s + m).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def draw_grid(path: Path, images: np.ndarray, captions: Sequence[str], title: str,
              overlays: np.ndarray | None = None, colors: Sequence[str] | None = None,
              cols: int | None = None, cell: float = 1.9, dpi: int = 80) -> Path:
    """Save a grid of images (B, H, W, 3), each captioned above; with `overlays` (B, H, W) each
    sample gets two panels, the image and the map over it. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = 2 if overlays is not None else 1
    n = len(images)
    cols = cols or max(1, min(n, 8 // per))
    rows = max(1, -(-n // cols))
    lines = max((c.count("\n") + 1 for c in captions), default=1)
    fig, axes = plt.subplots(rows, cols * per, figsize=(cols * per * cell, rows * (cell + 0.22 * lines)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, cols)
        ax = axes[r][c * per]
        ax.imshow(images[i], interpolation="nearest")
        if overlays is not None:
            ov = axes[r][c * per + 1]
            ov.imshow(images[i].mean(axis=-1), cmap="gray", interpolation="nearest")
            ov.imshow(overlays[i], cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="bilinear")
        ax.set_title(captions[i], fontsize=7, color=colors[i] if colors else "black", loc="left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi)


def save_figure(fig, path: Path, dpi: int = 100) -> Path:
    """The figure as a PNG, written atomically (readers never see half a file), then closed."""
    import matplotlib.pyplot as plt

    from vitcli.core.io import atomic_write

    try:
        atomic_write(Path(path), lambda f: fig.savefig(f, format="png", dpi=dpi))
    finally:
        plt.close(fig)
    return Path(path)
