"""`vitcli ensemble runs=[DIR,...] method=...`: combine trained runs' predictions.

Members are run dirs (a list, a glob, or a multirun dir); a member that is not a path is resolved as
`run=` is (latest, an experiment name: its newest run, a unique prefix). Each member's
predictions/<split>.npz is read, or predicted on the fly when missing
(predict_missing=true). Weights come from the weighting split (weights_from):
member accuracy for weighted_vote, Caruana selection for greedy. Output in
runs/ensembles/<stamp>/: report.txt, ensemble.json, predictions/<split>.npz and,
for MiniPlaces, the submission files.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

import vitcli.core.config_store  # noqa: F401  (registers the schemas)
from vitcli.core.errors import report_user_errors
from vitcli.core.run_paths import resolve_run


def typed_members(cfg: DictConfig) -> None:
    """runs=[latest,exp_b,...]: members that are neither paths nor globs become the runs they name."""
    if OmegaConf.is_missing(cfg, "runs"):
        return  # the job says what to pass
    listed = isinstance(cfg.runs, (list, ListConfig))
    entries = [str(e) for e in (cfg.runs if listed else [cfg.runs])]
    resolved = [e if glob.has_magic(e) or Path(e).expanduser().exists() else str(resolve_run(e, cfg.runs_root, "runs"))
                for e in entries]
    cfg.runs = resolved if listed else resolved[0]


@report_user_errors
def run_ensemble(cfg: DictConfig) -> dict[str, Any]:
    from vitcli.tasks.ensemble import run_ensemble_job

    typed_members(cfg)
    return run_ensemble_job(cfg)


@hydra.main(version_base="1.3", config_path="pkg://vitcli.conf", config_name="ensemble")
def main(cfg: DictConfig) -> None:
    run_ensemble(cfg)
