"""Pictures of samples: model inputs back to displayable pixels, captioned grids (optionally
with a heat-map overlay), and figures saved atomically as PNGs.

Shared by `vitcli explain`, `vitcli preview` and the error gallery of `vitcli eval`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from vitcli.core.io import atomic_write


def denormalize(x, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalized (B, 3, H, W) tensor -> (B, H, W, 3) floats in [0, 1] for display."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x.detach().float().cpu() * s + m).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def draw_grid(path: Path, images: np.ndarray, captions: Sequence[str], title: str,
              overlays: np.ndarray | None = None, colors: Sequence[str] | None = None,
              cols: int | None = None, cell: float = 1.9, dpi: int = 80) -> Path:
    """Save a grid of images (B, H, W, 3), each captioned above; with `overlays` (B, H, W) each
    sample gets two panels, the image and the map over it. Written atomically."""


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


    try:
        atomic_write(Path(path), lambda f: fig.savefig(f, format="png", dpi=dpi))
    finally:
        plt.close(fig)
    return Path(path)
