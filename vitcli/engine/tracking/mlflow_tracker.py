"""MLflow (logger=mlflow): one MLflow run per vitcli run, in the experiment named after it.

Params: the resolved config, flattened. Metrics: every epoch record under its metrics.csv name
(val_top1, val_loss, train_loss, lr, ...) at step=epoch; step records as step/train_loss,
step/lr, step/images_per_s at step=global_step; at the end best_val_top1 / best_val_top5 /
best_val_loss / best_epoch. Tags: vitcli.command, vitcli.run_dir, vitcli.status, git commit,
SLURM job id; in a -m sweep mlflow.parentRunId (the sweep's parent run) and optuna.trial /
optuna.state. Artifacts: config.yaml, summary.json, metrics.csv, class_counts.csv, train.log,
plots/, model.safetensors. The run dir's mlflow_run.json names the run, so a resumed or requeued
run continues it and `vitcli eval` / `predict` / `probe` / `ensemble` add to it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vitcli.core import runs
from vitcli.engine.tracking import mlflow_store as store
from vitcli.engine.tracking.base import Tracker, numeric, sweep_job

log = logging.getLogger("vitcli")

# vitcli status -> MLflow's run status (pruned trials finished as asked; a requeued job resumes it)
RUN_STATUS = {"completed": "FINISHED", "pruned": "FINISHED", "failed": "FAILED"}
TRIAL_STATE = {"completed": "COMPLETE", "pruned": "PRUNED", "failed": "FAIL"}
OUTPUTS = (runs.CONFIG, runs.SUMMARY, runs.METRICS_CSV, runs.CLASS_COUNTS, runs.TRAIN_LOG)


def record_path(run_dir: Path) -> Path:
    return Path(run_dir) / runs.MLFLOW_RUN


class MlflowTracker(Tracker):
    """A training run's MLflow run: created (or, on resume, reopened) at the first record."""

    name = "mlflow"

    def __init__(self, run_dir: Path, cfg: Any):
        super().__init__(run_dir, cfg)
        self.client: Any = None
        self.run_id: str | None = None
        self.job = sweep_job(self.run_dir)

    def _open(self) -> None:
        record = store.read_record(record_path(self.run_dir))
        uri = record["tracking_uri"] if record else store.tracking_uri(self.cfg)  # a resume: where it began
        self.client = store.client(uri)
        if record and self._reopen(record["run_id"]):
            log.info(f"mlflow: continuing run {self.run_id} ({uri})")
        else:
            exp = store.experiment_id(self.client, store.experiment_name(self.cfg),
                                      store.artifact_location(self.cfg, uri))
            tags = self._tags(uri)
            run = self.client.create_run(exp, run_name=self._run_name(), tags={k: store.tag_value(v)
                                                                                 for k, v in tags.items() if v is not None})
            self.run_id = run.info.run_id
            store.write_record(record_path(self.run_dir), uri, exp, self.run_id)
            log.info(f"mlflow: run {self.run_id} in experiment '{store.experiment_name(self.cfg)}' ({uri})")
        changed = store.log_params(self.client, self.run_id, store.flat_params(self.cfg))
        store.set_tags(self.client, self.run_id, {f"vitcli.resumed_with.{k}": v for k, v in changed.items()})

    def _reopen(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            log.warning(f"mlflow: run {run_id} named in {record_path(self.run_dir)} is gone; starting a new one")
            return False
        if run.info.lifecycle_stage == "deleted":
            self.client.restore_run(run_id)
        self.run_id = run_id
        self.client.update_run(run_id, status="RUNNING")
        store.set_tags(self.client, run_id, {"vitcli.status": "running"})
        return True

    def _run_name(self) -> str:
        given = self.cfg.logger.mlflow.get("run_name")
        if given:
            return str(given)
        return f"{self.job['sweep_dir'].name}/{self.run_dir.name}" if self.job else self.run_dir.name

    def _tags(self, uri: str) -> dict[str, Any]:
        tags = {**store.source_tags("train"), "vitcli.run_dir": str(self.run_dir.resolve()),
                "vitcli.experiment": self.cfg.name, "vitcli.model": self.cfg.model.name,
                "vitcli.data": self.cfg.data.name, "vitcli.status": "running",
                "mlflow.note.content": self.cfg.logger.get("notes")}
        if self.job:
            parent = store.read_record(self.job["sweep_dir"] / runs.MLFLOW_SWEEP)
            if parent and parent["tracking_uri"] == uri:
                tags["mlflow.parentRunId"] = parent["run_id"]
            tags.update({"vitcli.sweep_dir": str(self.job["sweep_dir"].resolve()), "vitcli.job": self.job["job"],
                         "optuna.trial": self.job["trial"]})
        return tags

    def _step(self, record: dict[str, Any]) -> None:
        scalars = {f"step/{k}": v for k, v in numeric(record).items() if k not in ("epoch", "global_step")}
        store.log_metrics(self.client, self.run_id, scalars, int(record.get("global_step") or 0))

    def _epoch(self, record: dict[str, Any]) -> None:
        scalars = {k: v for k, v in numeric(record).items() if k != "epoch"}
        store.log_metrics(self.client, self.run_id, scalars, int(record["epoch"]))

    def _finish(self, summary: dict[str, Any]) -> None:
        best, status = summary.get("best") or {}, str(summary.get("status"))
        store.log_metrics(self.client, self.run_id, {f"best_{k}": v for k, v in numeric(best).items()},
                          int(summary.get("epochs_completed") or 0))
        tags = {"vitcli.status": status, "vitcli.error": summary.get("error"),
                "vitcli.epochs_completed": summary.get("epochs_completed")}
        slurm = summary.get("slurm") or {}
        tags.update({"slurm.job_id": slurm.get("job_id"), "slurm.requeues": slurm.get("requeues")})
        if self.job and self.job["trial"] is not None:
            tags["optuna.state"] = TRIAL_STATE.get(status)
        store.set_tags(self.client, self.run_id, tags)
        files = [self.run_dir / name for name in OUTPUTS] + sorted((self.run_dir / runs.PLOTS).glob("*.png"))
        if self.cfg.logger.mlflow.get("log_model", True):
            files.append(self.run_dir / runs.MODEL_WEIGHTS)
        store.upload(self.client, self.run_id, files, self.run_dir)
        self.client.set_terminated(self.run_id, status=RUN_STATUS.get(status, "KILLED"))


def attach(run_dir: Path, cfg: Any, command: str, metrics: dict[str, Any], files: list[Path],
           tag: str | None = None, base: Path | None = None) -> None:
    """Add a command's metrics (<command>/<tag>/<name> at step = the run's epochs) and files (at their
    path in the run dir) to the MLflow run the run dir names."""
    record = store.read_record(record_path(run_dir))
    if record is None:
        log.warning(f"mlflow: {run_dir} names no MLflow run ({runs.MLFLOW_RUN}); its {command} is not logged there")
        return
    mlc = store.client(record["tracking_uri"])
    prefix = f"{command}/{tag}" if tag else command
    step = int(runs.read_summary(run_dir).get("epochs_completed") or 0) if (Path(run_dir) / runs.SUMMARY).is_file() else 0
    store.log_metrics(mlc, record["run_id"], numeric(metrics, prefix), step)
    store.upload(mlc, record["run_id"], files, base or Path(run_dir),
                 prefix=None if base is None else f"{command}/{Path(base).name}")
    log.info(f"mlflow: added the {command} to run {record['run_id']} ({record['tracking_uri']})")
