"""`vitcli train`: compose conf/train.yaml with overrides and fit one run (or a sweep with -m)."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

import vitcli.config  # noqa: F401  (registers the schemas)
from vitcli.errors import report_user_errors


@report_user_errors
def run_training(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from vitcli.engine.trainer import Trainer

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    summary = Trainer(cfg, run_dir).fit()
    return float(summary["best"]["val_top1"])


@hydra.main(version_base="1.3", config_path="pkg://vitcli.conf", config_name="train")
def main(cfg: DictConfig) -> float:
    return run_training(cfg)
