"""`vitcli ensemble runs=[DIR,...] method=...`: combine trained runs' predictions.

Members are run dirs (a list, a glob, or a multirun dir). Each member's
predictions/<split>.npz is read, or predicted on the fly when missing
(predict_missing=true). Weights come from the weighting split (weights_from):
member accuracy for weighted_vote, Caruana selection for greedy. Output in
runs/ensembles/<stamp>/: report.txt, ensemble.json, predictions/<split>.npz and,
for MiniPlaces, the submission files.
"""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig

import vitcli.core.config_store  # noqa: F401  (registers the schemas)
from vitcli.core.errors import report_user_errors


@report_user_errors
def run_ensemble(cfg: DictConfig) -> dict[str, Any]:
    from vitcli.tasks.ensemble import run_ensemble_job

    return run_ensemble_job(cfg)


@hydra.main(version_base="1.3", config_path="pkg://vitcli.conf", config_name="ensemble")
def main(cfg: DictConfig) -> None:
    run_ensemble(cfg)
