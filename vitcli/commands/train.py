"""`vitcli train`: compose conf/train.yaml with overrides and fit one run (or a sweep with -m)."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

import vitcli.config  # noqa: F401  (registers the schemas)
from vitcli.errors import report_user_errors


def fit_run(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from vitcli.engine.trainer import Trainer

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if cfg.resume:  # hydra.run.dir already points at the resumed run (conf/train.yaml)
        from vitcli.runs import resume_config

        cfg = resume_config(cfg, list(hydra_cfg.overrides.task))
    summary = Trainer(cfg, run_dir).fit()
    return float(summary["best"]["val_top1"])


@report_user_errors
def run_training(cfg: DictConfig) -> float:
    return fit_run(cfg)


@hydra.main(version_base="1.3", config_path="pkg://vitcli.conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from vitcli.sweep import in_multirun, run_sweep_job

    if in_multirun():  # a failed job is recorded and the sweep goes on
        return run_sweep_job(fit_run, cfg)
    return run_training(cfg)
