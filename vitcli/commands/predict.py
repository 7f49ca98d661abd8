"""`vitcli predict run=DIR split=test`: logits of a run on a split, plus leaderboard submissions.
`vitcli predict run=DIR images=PATH [topk=5]`: top-k classes of your own image files (CSV).

Writes RUN_DIR/predictions/<split>.npz (vitcli/predictions.py) and, for MiniPlaces
(submission=auto) or when asked (submission=always), RUN_DIR/submission/<split>_top5.txt
and <split>_kaggle.csv (vitcli/submission.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

import vitcli.config  # noqa: F401  (registers the schemas)
from vitcli.errors import UserError, report_user_errors

log = logging.getLogger("vitcli")


def predict_run(run: str | Path, split: str | None = None, checkpoint: str = "best", device: str = "auto",
                batch_size: int | None = None, tta: str = "none", crop_fraction: float = 0.875,
                submission: str = "auto") -> tuple[Any, dict[str, Any], list[Path]]:
    """Predict a split, save predictions/<split>.npz (+ submissions): (Predictions, metrics, written paths)."""
    from vitcli import submission as sub
    from vitcli.engine.inference import run_split
    from vitcli.predictions import predictions_path

    result, preds = run_split(run, split, checkpoint, device, batch_size, tta, crop_fraction)
    split = result["split"]
    written = [preds.save(predictions_path(run, split))]
    if sub.should_write(submission, result.get("data"), preds.ids):
        written += sub.write_submissions(run, split, preds.ids, preds.logits)
    return preds, result, written


@report_user_errors
def run_predict(cfg: DictConfig) -> dict:
    if OmegaConf.is_missing(cfg, "run"):
        raise UserError("run=DIR is missing: vitcli predict run=runs/<experiment>/<timestamp> split=test")
    if cfg.images:
        return predict_files(cfg)
    preds, result, written = predict_run(cfg.run, cfg.split, cfg.checkpoint, cfg.device, cfg.batch_size,
                                         cfg.eval.tta, cfg.eval.crop_fraction, cfg.submission)
    scored = (f"top1 {result['top1']:.2f}  top5 {result['top5']:.2f}" if preds.labels is not None
              else "labels unknown")
    log.info(f"{cfg.run} [{cfg.checkpoint}, {result['split']}, tta {cfg.eval.tta}]  {len(preds)} samples  {scored}")
    for path in written:
        log.info(f"wrote {path}")
    return result


def predict_files(cfg: DictConfig) -> dict:
    """images=PATH: the user's own files -> predictions/<name>.csv and a preview table."""
    from rich.console import Console

    from vitcli.predict_images import predict_images, preview_table

    result = predict_images(cfg.run, cfg.images, cfg.topk, cfg.checkpoint, cfg.device, cfg.batch_size, cfg.name)
    Console().print(preview_table(result))
    skipped = f", skipped {len(result.failed)} unreadable" if result.failed else ""
    log.info(f"wrote {result.csv_path} ({len(result.paths)} images{skipped})")
    return {"csv": str(result.csv_path), "images": len(result.paths), "failed": len(result.failed)}


@hydra.main(version_base="1.3", config_path="pkg://vitcli.conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    run_predict(cfg)
