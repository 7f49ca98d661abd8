"""`vitcli eval run=DIR`: reload a run's config and checkpoint, report its metrics on a split."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

import vitcli.config  # noqa: F401  (registers the schemas)
from vitcli.errors import report_user_errors

log = logging.getLogger("vitcli")


@report_user_errors
def run_eval(cfg: DictConfig) -> dict:
    from vitcli.engine.inference import evaluate_run

    result = evaluate_run(cfg.run, split=cfg.split, checkpoint=cfg.checkpoint, device=cfg.device,
                          batch_size=cfg.batch_size)
    log.info(
        f"{result['run']} [{cfg.checkpoint}, {cfg.split}]  top1 {result['top1']:.2f}  top5 {result['top5']:.2f}  "
        f"loss {result['loss']:.4f}  ({result['samples']} samples)"
    )
    return result


@hydra.main(version_base="1.3", config_path="pkg://vitcli.conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    run_eval(cfg)
