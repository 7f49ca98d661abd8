"""What `vitcli eval` writes besides its metrics: per-class precision / recall / F1
(scikit-learn's classification_report), balanced accuracy, the confusion CSV and plot,
and the error gallery (the most confident mistakes and the most confused class pairs).

Files, with tag = <split>_<checkpoint>[_<tta>]: eval/<tag>.json, eval/<tag>_per_class.csv,
eval/<tag>_confusion.csv, plots/confusion_<tag>.png, plots/errors_<tag>.png.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sklearn.metrics import balanced_accuracy_score, classification_report

from vitcli.core import runs
from vitcli.core.errors import UserError, printable
from vitcli.core.io import write_json
from vitcli.core.predictions import softmax
from vitcli.data import create_data
from vitcli.engine.evaluate import class_report
from vitcli.engine.inference import run_split
from vitcli.engine.tracking import attach_to_run
from vitcli.tasks.calibration_run import add_calibration
from vitcli.tasks.samples import gather_inputs
from vitcli.viz.gallery import denormalize
from vitcli.viz.plots import (
    confident_mistakes,
    confused_pairs,
    confusion_path,
    errors_path,
    plot_confusion,
    plot_errors,
)

log = logging.getLogger("vitcli")

ERRORS_SHOWN = 16  # mistakes in the gallery
PAIRS_SHOWN = 10  # confused pairs in its bar chart


def eval_tag(split: str, checkpoint: str, tta: str) -> str:
    return f"{split}_{checkpoint}" + ("" if tta == "none" else f"_{tta}")


def add_classification_report(result: dict[str, Any], rep: dict[str, np.ndarray], logits: np.ndarray,
                              labels: np.ndarray, names: list[str]) -> None:
    """Per-class precision / recall / F1 / support, macro and weighted F1 and balanced accuracy into
    `result` and `rep` (arrays in class order for the CSV). Classes absent from the split are left out
    of balanced accuracy (scikit-learn's definition: the mean recall over the classes present)."""

    known = labels >= 0
    y, pred = labels[known], logits[known].argmax(axis=1)
    report = classification_report(y, pred, labels=np.arange(len(names)), target_names=names,
                                    output_dict=True, zero_division=0)
    for key in ("precision", "recall", "f1-score"):
        rep[key] = np.array([report[name][key] for name in names])
    result["per_class"] = {name: {k.replace("-score", ""): float(report[name][k]) for k in
                                  ("precision", "recall", "f1-score")} | {"support": int(report[name]["support"])}
                           for name in names}
    result["macro_f1"] = float(report["macro avg"]["f1-score"])
    result["weighted_f1"] = float(report["weighted avg"]["f1-score"])
    result["balanced_accuracy"] = 100.0 * float(balanced_accuracy_score(y, pred)) if len(y) else float("nan")


def write_per_class(path: Path, rep: dict[str, np.ndarray], names: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["class", "name", "support", "correct", "accuracy", "precision", "recall", "f1",
                    "most_confused_with", "confused_count"])
        for c, name in enumerate(names):
            acc = rep["accuracy"][c]
            w.writerow([c, name, int(rep["support"][c]), int(rep["correct"][c]),
                        "" if np.isnan(acc) else f"{acc:.4f}", f"{rep['precision'][c]:.4f}",
                        f"{rep['recall'][c]:.4f}", f"{rep['f1-score'][c]:.4f}", names[int(rep["confused_with"][c])],
                        int(rep["confused_count"][c])])


def write_confusion_csv(path: Path, cm: np.ndarray, names: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["true\\pred", *names])
        for name, row in zip(names, cm):
            w.writerow([name, *map(int, row)])


def worst_table(rep: dict[str, np.ndarray], names: list[str], k: int, title: str):
    table = Table(title=title)
    for col in ("class", "accuracy", "f1", "support", "most confused with"):
        table.add_column(col, justify="left" if col in ("class", "most confused with") else "right")
    acc = np.where(np.isnan(rep["accuracy"]), np.inf, rep["accuracy"])  # classes absent from the split go last
    names = [escape(printable(str(n))) for n in names]  # data: no markup, no control characters
    for c in np.argsort(acc, kind="stable")[:k]:
        if not np.isfinite(acc[c]):
            break
        other = int(rep["confused_with"][c])
        table.add_row(names[c], f"{acc[c]:.1f}%", f"{rep['f1-score'][c]:.2f}", str(int(rep["support"][c])),
                      f"{names[other]} ({int(rep['confused_count'][c])})" if rep["confused_count"][c] else "-")
    return table


def write_error_gallery(run_dir: Path, tag: str, split: str, preds: Any, cm: np.ndarray, title: str) -> Path:
    """plots/errors_<tag>.png: the most confident mistakes (as the model saw them) and the most confused pairs."""
    names = preds.class_names
    idx = confident_mistakes(preds.logits, preds.labels, ERRORS_SHOWN)
    images = np.zeros((0, 1, 1, 3))
    if len(idx):
        cfg = runs.load_run_config(run_dir)
        data = create_data(cfg, device="cpu", train=False)
        images = denormalize(gather_inputs(data.loader(split), idx), cfg.data.mean, cfg.data.std)
    probs = softmax(preds.logits[idx])
    captions = [f"true: {names[preds.labels[i]]}\npred: {names[p.argmax()]} {100 * p.max():.0f}%"
                for i, p in zip(idx, probs)]
    pairs = [(f"{names[t]} → {names[p]}", c) for t, p, c in confused_pairs(cm, PAIRS_SHOWN)]
    return plot_errors(errors_path(run_dir, tag), images, captions, pairs, title)


def save_outputs(run_dir: Path, tag: str, split: str, result: dict[str, Any], rep: dict[str, np.ndarray],
                 preds: Any) -> list[Path]:
    """Write the JSON, CSVs, the confusion plot and the error gallery; return the paths."""
    names = preds.class_names
    title = f"{run_dir.parent.name}/{run_dir.name}: {tag} (top-1 {result['top1']:.2f}%)"
    out = [runs.eval_path(run_dir, f"{tag}_per_class.csv"), runs.eval_path(run_dir, f"{tag}_confusion.csv")]
    write_per_class(out[0], rep, names)
    write_confusion_csv(out[1], rep["confusion"], names)
    out.append(plot_confusion(confusion_path(run_dir, tag), rep["confusion"], names, title))
    out.append(write_error_gallery(run_dir, tag, split, preds, rep["confusion"], f"most confident mistakes · {title}"))
    write_json(runs.eval_path(run_dir, f"{tag}.json"), result)
    return [runs.eval_path(run_dir, f"{tag}.json"), *out]


def evaluate_and_report(run: str | Path, split: str = "val", checkpoint: str = "best", device: str = "auto",
                        batch_size: int | None = None, tta: str = "none", crop_fraction: float = 0.875,
                        precision: Any = None, worst: int = 10, save: bool = True, calibrate: str = "none",
                        calibrate_split: str | None = None, data_check: str = "strict") -> dict[str, Any]:
    """`vitcli eval`: score a run on a split, print the summary line and the worst classes, and
    (save=True) write the JSON, CSVs and plots into the run. Returns the result dict.

    data_check: strict stops when the split or the class names differ from what the checkpoint
    records; warn logs the difference and scores anyway (with the checkpoint's class names).
    """
    result, preds = run_split(run, split=split, checkpoint=checkpoint, device=device, batch_size=batch_size,
                              tta=tta, crop_fraction=crop_fraction, precision=precision, data_check=data_check)
    if preds.labels is None:
        raise UserError(f"split {split} of {run} has no labels, so it cannot be scored; "
                        f"use `vitcli predict run={run} split={split}` for its predictions")
    rep = class_report(preds.logits, preds.labels, preds.num_classes)
    acc = rep["accuracy"]
    result["mean_class_accuracy"] = float(np.nanmean(acc))
    result["per_class_accuracy"] = {n: (None if np.isnan(a) else float(a)) for n, a in zip(preds.class_names, acc)}
    add_classification_report(result, rep, preds.logits, preds.labels, preds.class_names)
    log.info(
        f"{result['run']} [{checkpoint}, {split}{'' if tta == 'none' else ', tta ' + str(tta)}]  "
        f"top1 {result['top1']:.2f}  top5 {result['top5']:.2f}  loss {result['loss']:.4f}  "
        f"mean class acc {result['mean_class_accuracy']:.2f}  balanced acc {result['balanced_accuracy']:.2f}  "
        f"macro F1 {result['macro_f1']:.3f}  ({result['samples']} samples)"
    )
    tag = eval_tag(split, checkpoint, tta)
    reliability = add_calibration(result, preds, run, str(checkpoint), tag, str(calibrate), calibrate_split, save,
                                  device=device, batch_size=batch_size, precision=precision, data_check=data_check)
    Console(width=120).print(worst_table(rep, preds.class_names, worst, f"worst classes ({tag})"))
    if save:
        run_dir = Path(run)
        written = save_outputs(run_dir, tag, result["split"], result, rep, preds) + reliability
        log.info("wrote " + ", ".join(str(p.relative_to(run_dir)) for p in written) + f" in {run_dir}")
        attach_to_run(run_dir, "eval", result, written, tag=tag)  # the trackers the run was trained with
    return result
