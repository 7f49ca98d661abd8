"""`vitcli probe run=DIR | model=NAME [method=knn|linear|fewshot]`: frozen-feature probes.

Writes <out>/probe/<method>.json and <out>/probe/<method>/predictions/<split>.npz, where <out>
is the run (run=DIR) or runs/probes/<stamp>/ (a model preset, untrained unless model.pretrained
or model.weights says otherwise). The work lives in vitcli/tasks/probe.py.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import vitcli.core.config_store  # noqa: F401  (registers the schemas)
import vitcli.core.task_schemas  # noqa: F401
from vitcli.core.errors import report_user_errors


@report_user_errors
def run_probe(cfg: DictConfig) -> dict:
    from hydra.core.hydra_config import HydraConfig

    from vitcli.tasks.probe import run_probe as probe

    return probe(cfg, HydraConfig.get().runtime.output_dir)


@hydra.main(version_base="1.3", config_path="pkg://vitcli.conf", config_name="probe")
def main(cfg: DictConfig) -> None:
    run_probe(cfg)
