"""Every command's schema in Hydra's ConfigStore (as <command>_schema, which each primary config
lists first in its defaults), and the `or_default` resolver conf/train.yaml's run dir uses.
Importing this module registers them: each command imports it, as do tests composing configs."""

from __future__ import annotations

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
    PredictConfig,
    PrepareConfig,
    PreviewConfig,
    ProbeConfig,
    RunsConfig,
)


def _or_default(value: Any, default: Any) -> Any:
    return default if value in (None, "", "None", "null") else value


def register_configs() -> None:
    if not OmegaConf.has_resolver("or_default"):  # hydra.run.dir: the resumed run, else a new stamp
        OmegaConf.register_new_resolver("or_default", _or_default)
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    cs.store(name="predict_schema", node=PredictConfig)
    cs.store(name="explain_schema", node=ExplainConfig)
    cs.store(name="preview_schema", node=PreviewConfig)
    cs.store(name="probe_schema", node=ProbeConfig)
    cs.store(name="ensemble_schema", node=EnsembleConfig)
    cs.store(name="export_schema", node=ExportConfig)
    cs.store(name="models_schema", node=ModelsConfig)
    cs.store(name="runs_schema", node=RunsConfig)
    cs.store(name="prepare_schema", node=PrepareConfig)
    # Group options are typed through train_schema's fields (model: ModelConfig, ...); storing
    # per-group schemas as well would list them as choices ("model_schema") in Hydra's errors.


register_configs()
