"""`vitcli eval run=DIR|latest|<experiment>`: reload a run's config and checkpoint, report its metrics on a split.

Besides top-1 / top-5 / loss it reports per-class accuracy, precision, recall and F1,
balanced accuracy, the confusion matrix and the worst classes, and (save=true) writes them
into the run directory (vitcli/tasks/eval_report.py): eval/<tag>.json, eval/<tag>_per_class.csv,
eval/<tag>_confusion.csv, plots/confusion_<tag>.png and plots/errors_<tag>.png, where
tag = <split>_<checkpoint>[_<tta>]. Nothing else there is touched.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import vitcli.core.config_store  # noqa: F401  (registers the schemas)
from vitcli.core.errors import report_user_errors
from vitcli.core.run_paths import run_argument


@report_user_errors
def run_eval(cfg: DictConfig) -> dict:
    from vitcli.tasks.eval_report import evaluate_and_report

    run_argument(cfg, "eval")
    return evaluate_and_report(cfg.run, cfg.split, cfg.checkpoint, cfg.device, cfg.batch_size, cfg.eval.tta,
                               cfg.eval.crop_fraction, cfg.precision, cfg.worst, cfg.save, cfg.eval.calibrate,
                               cfg.eval.calibrate_split, cfg.data_check)


@hydra.main(version_base="1.3", config_path="pkg://vitcli.conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    run_eval(cfg)
