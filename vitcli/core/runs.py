"""The run directory contract: every file name a run keeps, finding runs, loading them back.

    runs/<experiment>/<stamp>/
      config.yaml  summary.json  metrics.jsonl  metrics.csv  train.log  model.safetensors
      checkpoints/{last,best}.pt  predictions/<split>.npz  submission/  eval/  plots/  .hydra/

Every module that reads or writes one of these asks this module for its path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from vitcli.core.errors import UserError
from vitcli.core.io import read_json, write_json
from vitcli.core.schema import TrainConfig

CONFIG = "config.yaml"
SUMMARY = "summary.json"
METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
TRAIN_LOG = "train.log"  # hydra.job_logging writes <command>.log; training runs keep train.log
MODEL_WEIGHTS = "model.safetensors"
CHECKPOINTS = "checkpoints"
PREDICTIONS = "predictions"
SUBMISSION = "submission"
EVAL = "eval"
EXPORT = "export"  # vitcli export: <checkpoint>_timm/ and <checkpoint>.onnx
PLOTS = "plots"
PROBE = "probe"  # vitcli probe: features/<key>/<split>.npz, <method>.json, <method>/predictions/
CALIBRATION = "calibration.json"  # eval.calibrate=temperature: the fitted temperature
HYDRA = ".hydra"
WANDB = "wandb"  # W&B's own files and run_id (logger=wandb)
MLFLOW_RUN = "mlflow_run.json"  # logger=mlflow: tracking URI, experiment and run id (a resumed run continues it)
MLFLOW_SWEEP = "mlflow_sweep.json"  # in a -m sweep dir: the parent run its jobs nest under
TENSORBOARD = "tensorboard"  # logger=tensorboard: the run's event files
MLRUNS = "mlruns"  # <runs_root>/mlruns: the default MLflow store (mlflow.db) and its artifacts
CURVES = f"{PLOTS}/curves.png"
CLASS_COUNTS = "class_counts.csv"  # train samples per class (index, name, count), written at the start
# folders inside a run that never hold another run (the run browser does not descend into them)
RUN_SUBDIRS = {PROBE, HYDRA, CHECKPOINTS, PREDICTIONS, SUBMISSION, EVAL, EXPORT, PLOTS, WANDB, TENSORBOARD, MLRUNS,
               ".submitit", "__pycache__"}


def is_run_dir(path: str | Path) -> bool:
    """A vitcli run: a directory holding config.yaml or summary.json (not Hydra's own .hydra/)."""
    path = Path(path)
    return path.name != HYDRA and ((path / CONFIG).is_file() or (path / SUMMARY).is_file())


def find_run_dirs(root: str | Path) -> list[Path]:
    """Every run dir at or below `root` (a run dir is not searched further), in no set order."""
    found, stack = [], [Path(root)]
    while stack:
        d = stack.pop()
        if is_run_dir(d):
            found.append(d)
            continue
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        stack.extend(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False) and e.name not in RUN_SUBDIRS)
    return found


def plot_path(run_dir: str | Path, name: str) -> Path:
    """plots/<name> of a run (name with its extension, e.g. confusion_val_best.png)."""
    return Path(run_dir) / PLOTS / name


def predictions_path(run_dir: str | Path, split: str) -> Path:
    return Path(run_dir) / PREDICTIONS / f"{split}.npz"


def probe_result_path(run_dir: str | Path, method: str) -> Path:
    return Path(run_dir) / PROBE / f"{method}.json"


def probe_predictions_path(run_dir: str | Path, method: str, split: str) -> Path:
    """A probe's predictions, in a folder `vitcli ensemble runs=[...]` takes as a member."""
    return Path(run_dir) / PROBE / method / PREDICTIONS / f"{split}.npz"


def read_temperature(run_dir: str | Path, checkpoint: str = "best") -> float | None:
    """The temperature `vitcli eval eval.calibrate=temperature` stored for this checkpoint, else None."""
    path = Path(run_dir) / CALIBRATION
    if not path.is_file():
        return None
    record = read_json(path)
    return float(record["temperature"]) if record.get("checkpoint") == str(checkpoint) else None


def eval_path(run_dir: str | Path, name: str) -> Path:
    return Path(run_dir) / EVAL / name


def checkpoint_path(run_dir: Path, which: str) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"{which}.pt"


def require_run_dir(run: str | Path, setting: str = "run") -> Path:
    """A run dir that exists and holds config.yaml, else a UserError saying what to pass."""
    run_dir = Path(run).expanduser()
    if not run_dir.is_dir():
        raise UserError(f"{setting}={run}: no such directory (pass a run directory such as runs/default/<timestamp>; `vitcli runs` lists them)")
    if not (run_dir / CONFIG).is_file():
        raise UserError(f"{setting}={run}: no {CONFIG} there, so it is not a vitcli run directory")
    return run_dir


def load_run_config(run_dir: Path):
    """The run's resolved config, typed by the train schema (so old runs get new defaults)."""


    saved = OmegaConf.load(Path(run_dir) / CONFIG)
    schema = OmegaConf.structured(TrainConfig)
    try:
        cfg = OmegaConf.merge(schema, saved)
    except Exception as err:  # omegaconf's validation errors
        raise UserError(f"{Path(run_dir) / CONFIG} does not match the train schema: {str(err).splitlines()[0]}") from err
    return cfg


def require_checkpoint(run_dir: Path, which: str) -> Path:
    path = checkpoint_path(run_dir, which)
    if not path.is_file():
        raise UserError(
            f"{run_dir} has no checkpoints/{which}.pt (the run may have failed before its first epoch ended; "
            "check its train.log, or try checkpoint=last)"
        )
    return path


def read_summary(run_dir: Path) -> dict[str, Any]:
    return read_json(Path(run_dir) / SUMMARY)


def resume_config(cfg: Any, overrides: list[str]):
    """`vitcli train resume=DIR [dotted overrides]`: the run's own config, with the
    command line's dotted overrides (e.g. trainer.epochs=30) applied on top."""

    run_dir = require_run_dir(cfg.resume, "resume")
    if not checkpoint_path(run_dir, "last").is_file():
        raise UserError(f"resume={cfg.resume}: no checkpoints/last.pt to resume from")
    saved = load_run_config(run_dir)
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        if key.startswith("hydra") or key == "resume":
            continue
        if "." not in key:
            raise UserError(
                f"resume keeps the run's own '{key}' choice; only dotted overrides such as trainer.epochs=30 apply"
            )
        OmegaConf.update(saved, key, override.value(), merge=True)
    saved.resume = str(run_dir)
    return saved


def record_failure(run_dir: Path, cfg: Any, message: str) -> None:
    """Mark the job failed in summary.json, keeping what the trainer already wrote."""
    summary = read_summary(run_dir)
    if summary.get("status") in (None, "running"):
        summary = {"experiment": cfg.name, "model": cfg.model.name, "data": cfg.data.name,
                   "epochs": cfg.trainer.epochs, "epochs_completed": 0, "best": {}, **summary,
                   "status": "failed", "error": message}
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / SUMMARY, summary)
