"""`vitcli predict run=DIR split=test`: logits of a run on a split, plus leaderboard submissions.
`vitcli predict run=DIR images=PATH [topk=5]`: top-k classes of your own image files (CSV).

Writes RUN_DIR/predictions/<split>.npz (vitcli/core/predictions.py) and, for MiniPlaces
(submission=auto) or when asked (submission=always), RUN_DIR/submission/<split>_top5.txt
and <split>_kaggle.csv (vitcli/tasks/submission.py).
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

import vitcli.core.config_store  # noqa: F401  (registers the schemas)
from vitcli.core.errors import report_user_errors
from vitcli.core.run_paths import run_argument

log = logging.getLogger("vitcli")


@report_user_errors
def run_predict(cfg: DictConfig) -> dict:
    run_argument(cfg, "predict")
    if cfg.images:
        return predict_files(cfg)
    from vitcli.tasks.predict import predict_split

    preds, result, written = predict_split(cfg.run, cfg.split, cfg.checkpoint, cfg.device, cfg.batch_size,
                                           cfg.eval.tta, cfg.eval.crop_fraction, cfg.submission,
                                           cfg.precision, cfg.data_check)
    scored = (f"top1 {result['top1']:.2f}  top5 {result['top5']:.2f}" if preds.labels is not None
              else "labels unknown")
    log.info(f"{cfg.run} [{cfg.checkpoint}, {result['split']}, tta {cfg.eval.tta}]  {len(preds)} samples  {scored}")
    for path in written:
        log.info(f"wrote {path}")
    return result


def predict_files(cfg: DictConfig) -> dict:
    """images=PATH: the user's own files -> predictions/<name>.csv and a preview table."""
    from rich.console import Console

    from vitcli.tasks.predict_images import predict_images, preview_table

    result = predict_images(cfg.run, cfg.images, cfg.topk, cfg.checkpoint, cfg.device, cfg.batch_size, cfg.name)
    Console().print(preview_table(result))
    skipped = f", skipped {len(result.failed)} unreadable" if result.failed else ""
    log.info(f"wrote {result.csv_path} ({len(result.paths)} images{skipped})")
    return {"csv": str(result.csv_path), "images": len(result.paths), "failed": len(result.failed)}


@hydra.main(version_base="1.3", config_path="pkg://vitcli.conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    run_predict(cfg)
