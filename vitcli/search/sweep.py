"""Hydra multirun support: failed jobs are recorded instead of ending the sweep, and a
callback writes sweep_summary.csv plus a ranked table when the sweep ends.

Registered in conf/train.yaml under hydra.callbacks; it reads only the job directories
(.hydra/overrides.yaml and summary.json), so it works with any launcher (basic, joblib,
submitit) and any sweeper (basic grid, optuna). Pruned trials are listed as `pruned`, with
the epochs they trained, and are not failures. For vitcli's optuna sweeper it also checks
the study's direction up front and sends the study plots to W&B (search/study.py). With
logger=mlflow the sweep is a parent run whose children are the jobs, and with logger=tensorboard
each job gets an hparams row (engine/tracking: start_sweep, finish_sweep).
"""

from __future__ import annotations

import csv
import logging
import math
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from vitcli.core import phases, runs
from vitcli.core.errors import full_errors
from vitcli.launch.interrupts import TrainingInterrupted
from vitcli.engine.pruning import trial_env
from vitcli.engine.tracking import finish_sweep, start_sweep
from vitcli.launch.requeue import JobRequeued
from vitcli.search.study import check_direction, describe, log_to_wandb, sweep_study

log = logging.getLogger("vitcli")

SUMMARY_CSV = "sweep_summary.csv"
METRICS = ("val_top1", "val_top5", "val_loss")


def in_multirun() -> bool:

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_sweep_job(fit: Callable[[Any], float], cfg: Any) -> float | None:
    """Run one sweep job; on failure record it (summary.json + log) and return None, which
    the basic sweeper ignores and optuna records as a FAIL trial, so the sweep goes on
    (Hydra would re-raise the job's exception and end the whole multirun)."""

    phases.begin_unless_pending()  # this job's clock (the first job's started with the command)
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)

    try:
        spread_over_gpus(cfg, int(hc.job.num), str(hc.launcher.get("_target_", "")))
        with trial_env():  # an optuna trial's link reaches the job's torchrun ranks too
            return fit(cfg)
    except JobRequeued:
        raise  # SLURM runs this job again (launch/slurm.py); it resumes from its last.pt
    except TrainingInterrupted as err:  # Ctrl-C / SIGTERM stops the whole sweep, not just this job
        if err.plan is not None:  # rank 0 says it, once
            print(f"vitcli: {err}; sweep job {run_dir} saved its checkpoints/last.pt", file=sys.stderr)
        sys.exit(err.exit_code)
    except (Exception, SystemExit) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        log.error(f"job #{hc.job.num} failed: {message}  (the sweep goes on; recorded in {run_dir}/summary.json)")
        if full_errors():
            log.error(traceback.format_exc())
        runs.record_failure(run_dir, cfg, message)
        return None


def spread_over_gpus(cfg: Any, job_num: int, launcher: str, cuda_count: int | None = None) -> None:
    """Parallel launchers (joblib) run jobs side by side on one node: with N > 1 visible GPUs,
    job k trains on cuda:(k mod N). Only when trainer.device=auto and the job is one process
    (trainer.devices=1); an explicit device, DDP jobs and sequential launchers are left alone."""
    if "joblib" not in launcher.lower() or cfg.trainer.device != "auto" or int(cfg.trainer.devices) != 1:
        return
    if cuda_count is None:
        cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if cuda_count > 1:
        cfg.trainer.device = f"cuda:{job_num % cuda_count}"
        log.info(f"job #{job_num}: trainer.device={cfg.trainer.device} ({cuda_count} GPUs, joblib launcher)")


def _read_overrides(job_dir: Path) -> list[str]:

    path = job_dir / runs.HYDRA / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(path)] if path.is_file() else []


def _job_dirs(sweep_dir: Path) -> list[Path]:
    """The sweep's jobs: run dirs, and jobs killed before they wrote anything but Hydra's .hydra/."""
    dirs = [d for d in sweep_dir.iterdir() if d.is_dir() and (runs.is_run_dir(d) or (d / runs.HYDRA).is_dir())]
    return sorted(dirs, key=lambda d: (0, int(d.name), "") if d.name.isdigit() else (1, 0, d.name))


def collect(sweep_dir: Path, swept: list[str] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per job: its swept values, status and best metrics; and the swept keys
    (those whose value differs between jobs, plus any named in `swept`)."""
    jobs = []
    for job_dir in _job_dirs(Path(sweep_dir)):
        overrides = _read_overrides(job_dir)
        pairs = dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)
        summary = runs.read_summary(job_dir)
        jobs.append((job_dir, overrides, pairs, summary))
    keys: list[str] = []
    for _, _, pairs, _ in jobs:
        for k in pairs:
            varies = len({p.get(k) for _, _, p, _ in jobs if p}) > 1  # jobs killed before .hydra/ don't count
            if k not in keys and (varies or k in (swept or [])):
                keys.append(k)
    rows = []
    for job_dir, overrides, pairs, summary in jobs:
        best = summary.get("best") or {}
        row = {"job": job_dir.name, **{k: pairs.get(k, "") for k in keys},
               "status": summary.get("status", "missing"),
               **{m: best.get(m) for m in METRICS}, "best_epoch": best.get("epoch"),
               "epochs": summary.get("epochs_completed"), "wall_time_s": summary.get("wall_time_s"),
               "error": _error_with_logs(summary), "overrides": " ".join(overrides), "run_dir": str(job_dir)}
        rows.append(row)
    return rows, keys


def _error_with_logs(summary: dict[str, Any]) -> str:
    """A failed job's error, naming its SLURM log files when it ran in a SLURM job."""
    error = summary.get("error") or ""
    logs = [p for p in (summary.get("slurm") or {}).get("logs", []) if p not in error]
    if summary.get("status") in ("completed", "running") or not logs:
        return error
    return f"{error}; logs: {' '.join(logs)}" if error else f"logs: {' '.join(logs)}"


def rank(rows: list[dict[str, Any]], metric: str, mode: str) -> list[dict[str, Any]]:
    """Best first by `metric` (mode max or min); jobs without the metric last, in job order."""
    def usable(r):
        v = r.get(metric)
        return isinstance(v, (int, float)) and math.isfinite(v)

    scored = sorted((r for r in rows if usable(r)), key=lambda r: r[metric], reverse=(mode == "max"))
    return scored + [r for r in rows if not usable(r)]


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def print_table(rows: list[dict[str, Any]], keys: list[str], title: str) -> None:

    table = Table(title=title)
    columns = ["job", *keys, "status", *METRICS, "best_epoch", "epochs", "wall_time_s", "error"]
    numeric = (*METRICS, "best_epoch", "epochs", "wall_time_s", "job")
    for col in columns:
        table.add_column(col, justify="right" if col in numeric else "left", overflow="fold")
    for r in rows:
        cells = []
        for col in columns:
            v = r.get(col)
            cells.append("" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v))
        style = {"completed": None, "pruned": "yellow"}.get(r["status"], "red")
        table.add_row(*cells, style=style)
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # logs and pipes: no reason to wrap at 80 columns
    console.print(table)


class SweepSummary(Callback):
    """hydra.callbacks entry: sweep_summary.csv and a ranked table at the end of -m runs."""
    def __init__(self, metric: str = "val_top1", mode: str = "max") -> None:
        self.metric = metric
        self.mode = mode

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        check_direction(config)  # an optuna study must maximize what the train task returns
        start_sweep(config, Path(str(config.hydra.sweep.dir)))  # MLflow: the parent run the jobs nest under

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:

        try:
            sweep_dir = Path(str(config.hydra.sweep.dir))
            if not sweep_dir.is_dir():
                return
            params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
            rows, keys = collect(sweep_dir, swept=[str(k) for k in params])
            rows = rank(rows, self.metric, self.mode)
            write_csv(rows, sweep_dir / SUMMARY_CSV)
            failed = sum(r["status"] not in ("completed", "pruned") for r in rows)
            pruned = sum(r["status"] == "pruned" for r in rows)
            title = (f"sweep {sweep_dir}: {len(rows)} jobs, {failed} of {len(rows)} jobs failed"
                     f"{f', {pruned} pruned' if pruned else ''}; sorted by {self.metric} ({self.mode})")
            print_table(rows, keys, title)
            log.info(f"sweep summary: {sweep_dir / SUMMARY_CSV}")
            finish_sweep(config, sweep_dir, rows, keys, self.metric)  # MLflow parent run, TensorBoard hparams
            study = sweep_study(sweep_dir)
            if study is not None:
                log.info(describe(study))
                log_to_wandb(config, sweep_dir, study, sorted((sweep_dir / "plots").glob("*.png")))
        except Exception as err:  # a summary must never turn a finished sweep into a failure
            log.warning(f"could not write {SUMMARY_CSV}: {type(err).__name__}: {err}")
            return
        report_outcome(failed, len(rows), sweep_dir, pruned)


def report_outcome(failed: int, total: int, sweep_dir: Path, pruned: int = 0) -> None:
    """The sweep's last line; a sweep in which every job failed exits non-zero."""
    if not failed:
        log.info(f"{total} jobs: {total - pruned} completed, {pruned} pruned" if pruned else f"all {total} jobs completed")
        return
    line = f"{failed} of {total} jobs failed (see {sweep_dir / SUMMARY_CSV})"
    if failed < total:
        log.warning(line)
        return
    print(f"vitcli: error: {line}", file=sys.stderr)
    sys.exit(1)
