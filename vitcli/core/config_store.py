"""Every command's schema in Hydra's ConfigStore (as <command>_schema, which each primary config
lists first in its defaults), and the resolvers conf/train.yaml's run dir uses (`or_default`, `run_stamp`).
Importing this module registers them: each command imports it, as do tests composing configs."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from vitcli.core.schema import TrainConfig
from vitcli.core.task_schemas import (
    EnsembleConfig,
    EvalConfig,
    ExplainConfig,
    ExportConfig,
    ModelsConfig,
    PlanConfig,
    PredictConfig,
    PrepareConfig,
    PreviewConfig,
    ProbeConfig,
    RunsConfig,
)


def _or_default(value: Any, default: Any) -> Any:
    return default if value in (None, "", "None", "null") else value


def _run_stamp(pattern: str) -> str:
    """A new run's directory name: the time, as Hydra's ${now:pattern}; in a SLURM batch job or
    srun task `slurm-<job id>` (`.<step>` after the first srun step), so a requeued job finds its
    run again instead of starting a fresh timestamped one (an salloc shell keeps the time)."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job or "SLURM_PROCID" not in os.environ:
        return datetime.now().strftime(pattern)
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    step = os.environ.get("SLURM_STEP_ID", "0")
    return f"slurm-{job}" + (f".{step}" if step.isdigit() and step != "0" else "")


def register_configs() -> None:
    if not OmegaConf.has_resolver("or_default"):  # hydra.run.dir: the resumed run, else a new stamp
        OmegaConf.register_new_resolver("or_default", _or_default)
    if not OmegaConf.has_resolver("run_stamp"):
        OmegaConf.register_new_resolver("run_stamp", _run_stamp, use_cache=True)
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    cs.store(name="predict_schema", node=PredictConfig)
    cs.store(name="explain_schema", node=ExplainConfig)
    cs.store(name="preview_schema", node=PreviewConfig)
    cs.store(name="probe_schema", node=ProbeConfig)
    cs.store(name="plan_schema", node=PlanConfig)
    cs.store(name="ensemble_schema", node=EnsembleConfig)
    cs.store(name="export_schema", node=ExportConfig)
    cs.store(name="models_schema", node=ModelsConfig)
    cs.store(name="runs_schema", node=RunsConfig)
    cs.store(name="prepare_schema", node=PrepareConfig)
    # Group options are typed through train_schema's fields (model: ModelConfig, ...); storing
    # per-group schemas as well would list them as choices ("model_schema") in Hydra's errors.


register_configs()
