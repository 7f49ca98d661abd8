"""Reliability diagram: accuracy against confidence per bin, the gap to the diagonal shaded,
one panel per temperature (before / after temperature scaling)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from vitcli.viz.gallery import save_figure


def plot_reliability(panels: Sequence[tuple[str, Any]], path: Path, title: str) -> Path:
    """Draw one panel per (label, bins) pair; bins has edges, counts, accuracy, confidence and ece.

    >>> from types import SimpleNamespace as NS
    >>> bins = NS(edges=np.linspace(0, 1, 3), counts=np.array([1, 3]), accuracy=np.array([0.0, 1.0]),
    ...           confidence=np.array([0.4, 0.9]), ece=0.175)
    >>> plot_reliability([("T=1", bins)], Path("/tmp/rel.png"), "demo").name
    'rel.png'
    """

    matplotlib.use("Agg")

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4), squeeze=False)
    for ax, (label, bins) in zip(axes[0], panels):
        lo, width = bins.edges[:-1], np.diff(bins.edges)
        filled = bins.counts > 0
        acc = np.where(filled, bins.accuracy, 0.0)
        conf = np.where(filled, bins.confidence, 0.0)
        ax.bar(lo, acc, width=width, align="edge", color="#4c72b0", edgecolor="white", label="accuracy")
        ax.bar(lo[filled], (conf - acc)[filled], bottom=acc[filled], width=width[filled], align="edge",
               color="#dd8452", alpha=0.45, edgecolor="#dd8452", label="gap to confidence")
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top-1 probability)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{label}: ECE {100 * bins.ece:.2f}%")
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)
