"""`vitcli eval run=DIR`: reload a run's config and checkpoint, report its metrics on a split.

Besides top-1 / top-5 / loss it reports per-class accuracy, precision, recall and F1,
balanced accuracy, the confusion matrix and the worst classes, and (save=true) writes them
into the run directory (vitcli/eval_report.py): eval/<tag>.json, eval/<tag>_per_class.csv,
eval/<tag>_confusion.csv, plots/confusion_<tag>.png and plots/errors_<tag>.png, where
tag = <split>_<checkpoint>[_<tta>]. Nothing else there is touched.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

import vitcli.core.schema  # noqa: F401  (registers the schemas)
from vitcli.core.errors import UserError, report_user_errors

log = logging.getLogger("vitcli")


@report_user_errors
def run_eval(cfg: DictConfig) -> dict:
    from rich.console import Console

    from vitcli.engine.evaluate import class_report
    from vitcli.engine.inference import run_split
    from vitcli.tasks.eval_report import add_classification_report, eval_tag, log_to_wandb, save_outputs, worst_table

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
    add_classification_report(result, rep, preds.logits, preds.labels, preds.class_names)
    log.info(
        f"{result['run']} [{cfg.checkpoint}, {cfg.split}{'' if tta == 'none' else ', tta ' + tta}]  "
        f"top1 {result['top1']:.2f}  top5 {result['top5']:.2f}  loss {result['loss']:.4f}  "
        f"mean class acc {result['mean_class_accuracy']:.2f}  balanced acc {result['balanced_accuracy']:.2f}  "
        f"macro F1 {result['macro_f1']:.3f}  ({result['samples']} samples)"
    )
    tag = eval_tag(cfg.split, cfg.checkpoint, tta)
    Console(width=120).print(worst_table(rep, preds.class_names, cfg.worst, f"worst classes ({tag})"))
    if cfg.save:
        written = save_outputs(Path(cfg.run), tag, result["split"], result, rep, preds)
        log.info("wrote " + ", ".join(str(p.relative_to(cfg.run)) for p in written) + f" in {cfg.run}")
        log_to_wandb(Path(cfg.run), {"tag": tag, **result}, [p for p in written if p.suffix == ".png"])
    return result


@hydra.main(version_base="1.3", config_path="pkg://vitcli.conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    run_eval(cfg)
