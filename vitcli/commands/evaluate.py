"""`vitcli eval run=DIR`: reload a run's config and checkpoint, report its metrics on a split.

Besides top-1 / top-5 / loss it reports per-class accuracy, the confusion matrix
and the worst classes, and (save=true) writes them into the run directory:
eval/<tag>.json, eval/<tag>_per_class.csv, eval/<tag>_confusion.csv and
plots/confusion.png, where tag = <split>_<checkpoint>[_<tta>]. Nothing else there is touched.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

import vitcli.config  # noqa: F401  (registers the schemas)
from vitcli.errors import UserError, report_user_errors

log = logging.getLogger("vitcli")


def eval_tag(split: str, checkpoint: str, tta: str) -> str:
    return f"{split}_{checkpoint}" + ("" if tta == "none" else f"_{tta}")


def write_per_class(path: Path, rep: dict[str, np.ndarray], names: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["class", "name", "support", "correct", "accuracy", "most_confused_with", "confused_count"])
        for c, name in enumerate(names):
            acc = rep["accuracy"][c]
            w.writerow([c, name, int(rep["support"][c]), int(rep["correct"][c]),
                        "" if np.isnan(acc) else f"{acc:.4f}", names[int(rep["confused_with"][c])],
                        int(rep["confused_count"][c])])


def write_confusion_csv(path: Path, cm: np.ndarray, names: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["true\\pred", *names])
        for name, row in zip(names, cm):
            w.writerow([name, *map(int, row)])


def plot_confusion(path: Path, cm: np.ndarray, names: list[str], title: str) -> None:
    """Row-normalised confusion matrix as a heatmap (class names on the axes up to 40 classes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(names)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    side = min(4 + 0.18 * n, 24)
    fig, ax = plt.subplots(figsize=(side, side))
    im = ax.imshow(norm, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if n <= 40:
        ax.set_xticks(range(n), names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def worst_table(rep: dict[str, np.ndarray], names: list[str], k: int, title: str):
    from rich.table import Table

    table = Table(title=title)
    for col in ("class", "accuracy", "support", "most confused with"):
        table.add_column(col, justify="left" if col in ("class", "most confused with") else "right")
    acc = np.where(np.isnan(rep["accuracy"]), np.inf, rep["accuracy"])  # classes absent from the split go last
    for c in np.argsort(acc, kind="stable")[:k]:
        if not np.isfinite(acc[c]):
            break
        other = int(rep["confused_with"][c])
        table.add_row(names[c], f"{acc[c]:.1f}%", str(int(rep["support"][c])),
                      f"{names[other]} ({int(rep['confused_count'][c])})" if rep["confused_count"][c] else "-")
    return table


def save_outputs(run_dir: Path, tag: str, result: dict[str, Any], rep: dict[str, np.ndarray], names: list[str]) -> None:
    from vitcli.io import write_json

    eval_dir = run_dir / "eval"
    write_per_class(eval_dir / f"{tag}_per_class.csv", rep, names)
    write_confusion_csv(eval_dir / f"{tag}_confusion.csv", rep["confusion"], names)
    plot_confusion(run_dir / "plots" / "confusion.png", rep["confusion"], names,
                   f"{run_dir.name}: {tag} (top-1 {result['top1']:.2f}%)")
    write_json(eval_dir / f"{tag}.json", result)


@report_user_errors
def run_eval(cfg: DictConfig) -> dict:
    from rich.console import Console

    from vitcli.engine.evaluate import class_report
    from vitcli.engine.inference import run_split

    if OmegaConf.is_missing(cfg, "run"):
        raise UserError("run=DIR is missing: vitcli eval run=runs/<experiment>/<timestamp> (`vitcli runs` lists them)")
    tta = cfg.eval.tta
    result, preds = run_split(cfg.run, split=cfg.split, checkpoint=cfg.checkpoint, device=cfg.device,
                              batch_size=cfg.batch_size, tta=tta, crop_fraction=cfg.eval.crop_fraction,
                              precision=cfg.precision)
    if preds.labels is None:
        raise UserError(f"split {cfg.split} of {cfg.run} has no labels, so it cannot be scored; "
                        f"use `vitcli predict run={cfg.run} split={cfg.split}` for its predictions")
    rep = class_report(preds.logits, preds.labels, preds.num_classes)
    acc = rep["accuracy"]
    result["mean_class_accuracy"] = float(np.nanmean(acc))
    result["per_class_accuracy"] = {n: (None if np.isnan(a) else float(a)) for n, a in zip(preds.class_names, acc)}
    log.info(
        f"{result['run']} [{cfg.checkpoint}, {cfg.split}{'' if tta == 'none' else ', tta ' + tta}]  "
        f"top1 {result['top1']:.2f}  top5 {result['top5']:.2f}  loss {result['loss']:.4f}  "
        f"mean class acc {result['mean_class_accuracy']:.2f}  ({result['samples']} samples)"
    )
    tag = eval_tag(cfg.split, cfg.checkpoint, tta)
    Console(width=120).print(worst_table(rep, preds.class_names, cfg.worst, f"worst classes ({tag})"))
    if cfg.save:
        save_outputs(Path(cfg.run), tag, result, rep, preds.class_names)
        log.info(f"wrote {Path(cfg.run) / 'eval' / tag}.json, per-class and confusion CSVs, plots/confusion.png")
    return result


@hydra.main(version_base="1.3", config_path="pkg://vitcli.conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    run_eval(cfg)
