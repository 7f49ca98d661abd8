"""Run plots: plots/curves.png (loss, accuracy and learning rate per epoch) from metrics.jsonl."""

from __future__ import annotations

from pathlib import Path

from vitcli import runs
from vitcli.io import read_jsonl



def plot_curves(run_dir: Path, steps_per_epoch: float | None = None) -> Path | None:
    """Write <run_dir>/plots/curves.png; None when the run has no finished epoch yet.
    With `steps_per_epoch`, the learning rate is drawn per logged step (warmup shows)."""
    run_dir = Path(run_dir)
    records = read_jsonl(run_dir / runs.METRICS_JSONL)
    epochs = [r for r in records if r.get("kind") == "epoch"]
    steps = [r for r in records if r.get("kind") == "step" and r.get("lr") is not None] if steps_per_epoch else []
    if not epochs:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI backend
    import matplotlib.pyplot as plt

    x = [r["epoch"] for r in epochs]

    def series(key: str) -> list:
        return [r.get(key) if r.get(key) is not None else float("nan") for r in epochs]

    fig, (ax_loss, ax_acc, ax_lr) = plt.subplots(1, 3, figsize=(13, 3.6))
    ax_loss.plot(x, series("train_loss"), "o-", label="train")
    ax_loss.plot(x, series("val_loss"), "o-", label="val")
    ax_loss.set(title="loss", xlabel="epoch")
    ax_acc.plot(x, series("val_top1"), "o-", label="val top-1")
    ax_acc.plot(x, series("val_top5"), "o-", label="val top-5")
    ax_acc.set(title="accuracy (%)", xlabel="epoch")
    if steps:
        ax_lr.plot([r["global_step"] / steps_per_epoch for r in steps], [r["lr"] for r in steps], "-", label="step")
    ax_lr.plot(x, series("lr"), "o", label="end of epoch")
    ax_lr.set(title="learning rate", xlabel="epoch")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_acc, ax_lr):
        ax.legend()
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(str(run_dir), fontsize=8)
    fig.tight_layout()
    out = run_dir / runs.CURVES
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
