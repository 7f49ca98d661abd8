"""A -m sweep in MLflow: one parent run for the sweep, created before its jobs start (each job's
run nests under it through the sweep dir's mlflow_sweep.json), closed with the sweep's summary,
its best result and the study plots when the sweep ends."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from vitcli.core import runs
from vitcli.engine.tracking import mlflow_store as store

log = logging.getLogger("vitcli")

SWEEP_FILES = ("sweep_summary.csv", "optimization_results.yaml", "optuna_study.yaml", "multirun.yaml")


def start_sweep(config: Any, sweep_dir: Path) -> None:
    """The parent run, in the experiment the jobs log to; its params are the search space."""
    uri = store.tracking_uri(config)
    mlc = store.client(uri)
    exp = store.experiment_id(mlc, store.experiment_name(config), store.artifact_location(config, uri))
    sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_", default="") or "")
    tags = {**store.source_tags("train -m"), "vitcli.sweep_dir": str(Path(sweep_dir).resolve()),
            "vitcli.experiment": config.name, "vitcli.status": "running", "vitcli.sweeper": sweeper,
            "optuna.study": OmegaConf.select(config, "hydra.sweeper.study_name", default=None)}
    run = mlc.create_run(exp, run_name=f"{Path(sweep_dir).name} (sweep)",
                         tags={k: store.tag_value(v) for k, v in tags.items() if v is not None})
    space = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    overrides = OmegaConf.select(config, "hydra.overrides.task", default=None) or []
    params = {f"sweep.{k}": str(v) for k, v in space.items()}
    params["overrides"] = " ".join(str(o) for o in overrides)
    store.log_params(mlc, run.info.run_id, {store.safe_key(k): store.param_value(v) for k, v in params.items()})
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    store.write_record(Path(sweep_dir) / runs.MLFLOW_SWEEP, uri, exp, run.info.run_id)
    log.info(f"mlflow: sweep parent run {run.info.run_id} in experiment '{store.experiment_name(config)}' ({uri})")


def finish_sweep(sweep_dir: Path, rows: list[dict[str, Any]], metric: str) -> None:
    """The sweep's outcome on its parent run: counts, the best job's metrics, the summary files."""
    record = store.read_record(Path(sweep_dir) / runs.MLFLOW_SWEEP)
    if record is None:
        return
    mlc = store.client(record["tracking_uri"])
    statuses = [r.get("status") for r in rows]
    failed = sum(s not in ("completed", "pruned") for s in statuses)
    scored = [r for r in rows if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])]
    best = scored[0] if scored else {}  # rows come ranked by the sweep's metric
    metrics = {"jobs": len(rows), "failed_jobs": failed, "pruned_jobs": statuses.count("pruned"),
               **{f"best_{k}": best.get(k) for k in ("val_top1", "val_top5", "val_loss") if best.get(k) is not None}}
    store.log_metrics(mlc, record["run_id"], metrics, 0)
    store.set_tags(mlc, record["run_id"], {"vitcli.status": "failed" if rows and failed == len(rows) else "completed",
                                           "vitcli.best_job": best.get("job"), "vitcli.best_run_dir": best.get("run_dir")})
    files = [Path(sweep_dir) / name for name in SWEEP_FILES] + sorted((Path(sweep_dir) / runs.PLOTS).glob("*.png"))
    store.upload(mlc, record["run_id"], files, Path(sweep_dir))
    mlc.set_terminated(record["run_id"], status="FAILED" if rows and failed == len(rows) else "FINISHED")
