"""Run plots: plots/curves.png (loss, accuracy and learning rate per epoch) from metrics.jsonl,
the confusion matrix and the error gallery of `vitcli eval`."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.ticker import MaxNLocator
from omegaconf import OmegaConf

from vitcli.core import runs
from vitcli.core.io import read_jsonl
from vitcli.core.predictions import softmax
from vitcli.viz.gallery import save_figure


def _run_title(run_dir: Path) -> str:
    """'<experiment>/<run dir name>' (config.yaml's name), never an absolute path."""
    try:
        name = OmegaConf.load(run_dir / runs.CONFIG).get("name")
    except Exception:  # no or unreadable config: the parent folder is the experiment
        name = None
    return f"{name or run_dir.parent.name}/{run_dir.name}"


def _steps_per_epoch(run_dir: Path) -> float | None:
    """Optimizer steps per epoch from summary.json (rewritten after every epoch)."""
    try:
        summary = runs.read_summary(run_dir)
        return summary["global_step"] / summary["epochs_completed"] if summary.get("epochs_completed") else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def best_epoch(epochs: list[dict]) -> dict | None:
    """The epoch record with the highest top-1 of the raw or EMA weights (the first on ties)."""
    def score(r: dict) -> float:
        return max(r.get("val_top1") or float("-inf"), r.get("ema_top1") or float("-inf"))

    return max(epochs, key=score) if epochs else None


def plot_curves(run_dir: Path, steps_per_epoch: float | None = None) -> Path | None:
    """(Re)write <run_dir>/plots/curves.png atomically; None when the run has no finished epoch yet.
    Self-contained: reads metrics.jsonl, summary.json (steps per epoch, for the per-step learning
    rate) and config.yaml (the title). Marks the best epoch; draws the EMA curves when logged."""
    run_dir = Path(run_dir)
    records = read_jsonl(run_dir / runs.METRICS_JSONL)
    epochs = [r for r in records if r.get("kind") == "epoch"]
    if not epochs:
        return None
    steps_per_epoch = steps_per_epoch or _steps_per_epoch(run_dir)
    steps = [r for r in records if r.get("kind") == "step" and r.get("lr") is not None] if steps_per_epoch else []



    x = [r["epoch"] for r in epochs]

    def series(key: str) -> list:
        return [r.get(key) if r.get(key) is not None else float("nan") for r in epochs]

    has_ema = any(r.get("ema_top1") is not None for r in epochs)
    fig, (ax_loss, ax_acc, ax_lr) = plt.subplots(1, 3, figsize=(13, 3.6))
    ax_loss.plot(x, series("train_loss"), "o-", label="train")
    ax_loss.plot(x, series("val_loss"), "o-", label="val")
    if has_ema:
        ax_loss.plot(x, series("ema_loss"), "o--", label="val (EMA)")
    ax_loss.set(title="loss", xlabel="epoch")
    ax_acc.plot(x, series("val_top1"), "o-", label="val top-1")
    ax_acc.plot(x, series("val_top5"), "o-", label="val top-5")
    if has_ema:
        ax_acc.plot(x, series("ema_top1"), "o--", label="val top-1 (EMA)")
    best = best_epoch(epochs)
    top = max(best.get("val_top1") or float("-inf"), best.get("ema_top1") or float("-inf"))
    for ax in (ax_loss, ax_acc):
        ax.axvline(best["epoch"], color="gray", ls=":", lw=1)
    ax_acc.plot([best["epoch"]], [top], "*", color="gold", ms=14, mec="black", label=f"best {top:.2f} (epoch {best['epoch']})")
    ax_acc.set(title="accuracy (%)", xlabel="epoch")
    if steps:
        ax_lr.plot([r["global_step"] / steps_per_epoch for r in steps], [r["lr"] for r in steps], "-", label="step")
    ax_lr.plot(x, series("lr"), "o", label="end of epoch")
    ax_lr.set(title="learning rate", xlabel="epoch")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(_run_title(run_dir), fontsize=9)
    fig.tight_layout()
    return save_figure(fig, run_dir / runs.CURVES, dpi=100)


def try_plot_curves(run_dir: Path) -> None:
    """plot_curves for the train loop: a plot is never worth failing a run."""
    try:
        plot_curves(run_dir)
    except Exception as err:
        logging.getLogger("vitcli").warning(f"could not write {runs.CURVES}: {err}")


def confusion_path(run_dir: Path, tag: str) -> Path:
    return runs.plot_path(run_dir, f"confusion_{tag}.png")


def errors_path(run_dir: Path, tag: str) -> Path:
    return runs.plot_path(run_dir, f"errors_{tag}.png")


def plot_confusion(path: Path, cm: np.ndarray, names: list[str], title: str) -> Path:
    """Confusion matrix of counts on a log colour scale (one error stands out from the white
    zeros); the counts are written in the cells up to 20 classes, class names up to 40."""



    n = len(names)
    side = min(4 + (0.45 if n <= 20 else 0.18) * n, 24)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    masked = np.ma.masked_equal(cm, 0)
    im = ax.imshow(masked, cmap=cmap, norm=LogNorm(vmin=1, vmax=max(int(cm.max()), 2)), interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="samples (log scale; white: none)")
    if n <= 20:
        for (i, j), v in np.ndenumerate(cm):
            if v:
                ax.text(j, i, str(int(v)), ha="center", va="center", fontsize=7,
                        color="black" if v > np.sqrt(max(cm.max(), 1)) else "white")
    if n <= 40:
        ax.set_xticks(range(n), names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), names, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def confident_mistakes(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Indices of up to `k` wrong predictions, most confident (highest softmax top-1) first."""
    probs = softmax(logits)
    pred = probs.argmax(axis=1)
    wrong = np.flatnonzero((labels >= 0) & (pred != labels))
    return wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:k]


def confused_pairs(cm: np.ndarray, k: int) -> list[tuple[int, int, int]]:
    """The `k` largest off-diagonal cells as (true, predicted, count), count > 0."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:k]
    return [(int(i), int(j), int(off[i, j])) for i, j in zip(*np.unravel_index(order, off.shape)) if off[i, j] > 0]


def plot_errors(path: Path, images: np.ndarray, captions: list[str], pairs: list[tuple[str, int]],
                title: str, cols: int = 8) -> Path:
    """Gallery of mistakes (images captioned true / predicted) above a bar chart of the most confused pairs."""


    n = len(images)
    cols = max(1, min(cols, n))
    rows = -(-n // cols) if n else 0
    bar_h = 0.6 + 0.25 * len(pairs)
    fig = plt.figure(figsize=(max(cols * 1.6, 6), rows * 1.9 + bar_h + 0.6))
    grid = fig.add_gridspec(rows + 1, cols, height_ratios=[1.9] * rows + [bar_h])
    for i in range(n):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        ax.imshow(images[i], interpolation="nearest")
        ax.set_title(captions[i], fontsize=7, color="tab:red", loc="left")
        ax.axis("off")
    ax = fig.add_subplot(grid[rows, :])
    if pairs:
        labels, counts = zip(*pairs)
        ax.barh(range(len(pairs)), counts, color="tab:red")
        ax.set_yticks(range(len(pairs)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("samples (true → predicted)")
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, "no mistakes", ha="center", va="center")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=80)
