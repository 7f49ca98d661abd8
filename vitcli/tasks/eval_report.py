"""What `vitcli eval` writes besides its metrics: per-class precision / recall / F1
(scikit-learn's classification_report), balanced accuracy, the confusion CSV and plot,
and the error gallery (the most confident mistakes and the most confused class pairs).

Files, with tag = <split>_<checkpoint>[_<tta>]: eval/<tag>.json, eval/<tag>_per_class.csv,
eval/<tag>_confusion.csv, plots/confusion_<tag>.png, plots/errors_<tag>.png.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from vitcli.core import runs

ERRORS_SHOWN = 16  # mistakes in the gallery
PAIRS_SHOWN = 10  # confused pairs in its bar chart


def eval_tag(split: str, checkpoint: str, tta: str) -> str:
    return f"{split}_{checkpoint}" + ("" if tta == "none" else f"_{tta}")


def add_classification_report(result: dict[str, Any], rep: dict[str, np.ndarray], logits: np.ndarray,
                              labels: np.ndarray, names: list[str]) -> None:
    """Per-class precision / recall / F1 / support, macro and weighted F1 and balanced accuracy into
    `result` and `rep` (arrays in class order for the CSV). Classes absent from the split are left out
    of balanced accuracy (scikit-learn's definition: the mean recall over the classes present)."""
    from sklearn.metrics import balanced_accuracy_score, classification_report

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
    from rich.table import Table

    table = Table(title=title)
    for col in ("class", "accuracy", "f1", "support", "most confused with"):
        table.add_column(col, justify="left" if col in ("class", "most confused with") else "right")
    acc = np.where(np.isnan(rep["accuracy"]), np.inf, rep["accuracy"])  # classes absent from the split go last
    for c in np.argsort(acc, kind="stable")[:k]:
        if not np.isfinite(acc[c]):
            break
        other = int(rep["confused_with"][c])
        table.add_row(names[c], f"{acc[c]:.1f}%", f"{rep['f1-score'][c]:.2f}", str(int(rep["support"][c])),
                      f"{names[other]} ({int(rep['confused_count'][c])})" if rep["confused_count"][c] else "-")
    return table


def write_error_gallery(run_dir: Path, tag: str, split: str, preds: Any, cm: np.ndarray, title: str) -> Path:
    """plots/errors_<tag>.png: the most confident mistakes (as the model saw them) and the most confused pairs."""
    from vitcli.core import runs
    from vitcli.data import create_data
    from vitcli.viz.gallery import denormalize, gather_inputs
    from vitcli.viz.plots import confident_mistakes, confused_pairs, errors_path, plot_errors

    names = preds.class_names
    idx = confident_mistakes(preds.logits, preds.labels, ERRORS_SHOWN)
    images = np.zeros((0, 1, 1, 3))
    if len(idx):
        cfg = runs.load_run_config(run_dir)
        data = create_data(cfg, device="cpu", train=False)
        images = denormalize(gather_inputs(data.loader(split), idx), cfg.data.mean, cfg.data.std)
    z = preds.logits[idx] - preds.logits[idx].max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    captions = [f"true: {names[preds.labels[i]]}\npred: {names[p.argmax()]} {100 * p.max():.0f}%"
                for i, p in zip(idx, probs)]
    pairs = [(f"{names[t]} → {names[p]}", c) for t, p, c in confused_pairs(cm, PAIRS_SHOWN)]
    return plot_errors(errors_path(run_dir, tag), images, captions, pairs, title)


def save_outputs(run_dir: Path, tag: str, split: str, result: dict[str, Any], rep: dict[str, np.ndarray],
                 preds: Any) -> list[Path]:
    """Write the JSON, CSVs, the confusion plot and the error gallery; return the paths."""
    from vitcli.viz.plots import confusion_path, plot_confusion
    from vitcli.core.io import write_json

    names = preds.class_names
    eval_dir = run_dir / runs.EVAL
    title = f"{run_dir.parent.name}/{run_dir.name}: {tag} (top-1 {result['top1']:.2f}%)"
    out = [eval_dir / f"{tag}_per_class.csv", eval_dir / f"{tag}_confusion.csv"]
    write_per_class(out[0], rep, names)
    write_confusion_csv(out[1], rep["confusion"], names)
    out.append(plot_confusion(confusion_path(run_dir, tag), rep["confusion"], names, title))
    out.append(write_error_gallery(run_dir, tag, split, preds, rep["confusion"], f"most confident mistakes · {title}"))
    write_json(eval_dir / f"{tag}.json", result)
    return [eval_dir / f"{tag}.json", *out]


def log_to_wandb(run_dir: Path, metrics: dict[str, Any], images: list[Path]) -> None:
    """Mirror an evaluation / explanation to W&B (job_type=eval) when the run was trained with logger=wandb."""
    from vitcli.core import runs
    from vitcli.engine.tracking import WandbSink

    WandbSink.log_eval(Path(run_dir), runs.load_run_config(Path(run_dir)), metrics, images)
