"""The run directory contract: every file name a run keeps (LAYOUT says what each holds), finding
runs, loading them back (what a user types for `run=` is resolved in run_paths.py).

    runs/<name>/<YYYY-MM-DD_HH-MM-SS>/    (-m: runs/<name>/multirun/<stamp>/<job>/; a SLURM job: slurm-<jobid>)

Every module that reads or writes one of these asks this module for its path.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from vitcli.core.errors import UserError
from vitcli.core.io import read_json, write_json
from vitcli.core.schema import TrainConfig

log = logging.getLogger("vitcli")
_warned: set[str] = set()  # stale-temperature lines already logged by this process

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
CALIBRATION = "calibration.json"  # eval.calibrate=temperature: the fitted temperature, keyed to the weights
HYDRA = ".hydra"
WANDB = "wandb"  # W&B's own files and run_id (logger=wandb)
MLFLOW_RUN = "mlflow_run.json"  # logger=mlflow: tracking URI, experiment and run id (a resumed run continues it)
MLFLOW_SWEEP = "mlflow_sweep.json"  # in a -m sweep dir: the parent run its jobs nest under
TENSORBOARD = "tensorboard"  # logger=tensorboard: the run's event files
MLRUNS = "mlruns"  # <runs_root>/mlruns: the default MLflow store (mlflow.db) and its artifacts
CURVES = f"{PLOTS}/curves.png"
CLASS_COUNTS = "class_counts.csv"  # train samples per class (index, name, count), written at the start
# what a run directory holds, in the order the docs list it (docs/gen_reference.py generates the
# run-dir reference page from this; every name above must appear in a key)
LAYOUT: dict[str, str] = {
    f"{HYDRA}/": "Hydra's own record: the composed config, hydra.yaml, the command line's overrides",
    CONFIG: "the resolved config (written at every start and resume; commands that read the run load it)",
    SUMMARY: "best and final metrics, epochs, wall time and its phases (`phases`), images/s, status (completed, failed, ...), SLURM job",
    METRICS_JSONL: "one record per logged step and per epoch",
    METRICS_CSV: "the epoch records as a table (logger.csv=true)",
    CLASS_COUNTS: "train samples per class (index, name, count), written at the start",
    TRAIN_LOG: "the run's log",
    f"{CHECKPOINTS}/": "last.pt and best.pt (atomic; one write per save, on a background thread with "
                       "trainer.async_checkpoints; best.pt a hard link to the last.pt it was; weights_only loads; "
                       "class names and data identity inside). trainer.strategy=fsdp: last and best are links to "
                       "step-<N>-<tag>/ directories holding every rank's shard-*.safetensors and "
                       "rng-<rank>.safetensors and state.json (safetensors and JSON, no pickle)",
    MODEL_WEIGHTS: "the best weights (LoRA merged; gathered from the shards under FSDP), loadable by plain timm",
    f"{PREDICTIONS}/": "<split>.npz: logits, ids, labels, class names (vitcli predict); <name>.csv for images=",
    f"{SUBMISSION}/": "<split>_top5.txt (devkit format) and <split>_kaggle.csv (MiniPlaces)",
    f"{EVAL}/": "vitcli eval: <tag>.json, <tag>_per_class.csv, <tag>_confusion.csv; tag = <split>_<checkpoint>[_<tta>]",
    CALIBRATION: "vitcli eval eval.calibrate=temperature: the temperature, the split it was fitted on, keyed to "
                 "its checkpoint's content and TTA",
    f"{PLOTS}/": f"{CURVES.split('/')[-1]} (at most every 30 s, and at the end), confusion_<tag>.png, errors_<tag>.png, reliability_<tag>.png "
                 "(eval), explain_<split>_<method>.png (explain)",
    f"{PROBE}/": "vitcli probe: features/ (cached), <method>.json, <method>/predictions/<split>.npz",
    f"{EXPORT}/": "vitcli export: <checkpoint>_timm/ and <checkpoint>.onnx",
    f"{WANDB}/": "W&B's own files and run_id (logger=wandb)",
    MLFLOW_RUN: "logger=mlflow: the tracking URI, experiment and run id (a resumed run continues it)",
    MLFLOW_SWEEP: "in a -m sweep dir, with logger=mlflow: the parent run its jobs nest under",
    f"{TENSORBOARD}/": "logger=tensorboard: the run's event files (eval, predict, probe, explain, ensemble add to them)",
    f"<runs_root>/{MLRUNS}/": "logger=mlflow without logger.mlflow.tracking_uri: the default store (mlflow.db) "
                             "and its artifacts, beside the runs",
    ".lock": "held while the run trains (one writer per run dir)",
}
# folders inside a run that never hold another run (the run browser does not descend into them)
RUN_SUBDIRS = {PROBE, HYDRA, CHECKPOINTS, PREDICTIONS, SUBMISSION, EVAL, EXPORT, PLOTS, WANDB, TENSORBOARD, MLRUNS,
               ".submitit", "__pycache__"}


def is_run_dir(path: str | Path) -> bool:
    """A vitcli run: a directory holding config.yaml or summary.json (not Hydra's own .hydra/)."""
    path = Path(path)
    return path.name != HYDRA and ((path / CONFIG).is_file() or (path / SUMMARY).is_file())


def find_run_dirs(root: str | Path, max_depth: int | None = None) -> list[Path]:
    """Every run dir at or below `root` (a run dir is not searched further; nor folders more than
    `max_depth` levels down, when given), in no set order."""
    found, stack = [], [(Path(root), 0)]
    while stack:
        d, depth = stack.pop()
        if is_run_dir(d):
            found.append(d)
            continue
        if max_depth is not None and depth >= max_depth:
            continue
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        stack.extend((Path(e.path), depth + 1) for e in entries
                     if e.is_dir(follow_symlinks=False) and e.name not in RUN_SUBDIRS)
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


def read_calibration(run_dir: str | Path, key: str | None, tta: str = "none") -> dict[str, Any] | None:
    """The calibration record `vitcli eval eval.calibrate=temperature` wrote for these weights (their
    content key, models/run_model.py `checkpoint_key`) under this TTA, else None. One fitted on other
    weights (best.pt rewritten by a resumed run) or another TTA is ignored, with one line saying so."""
    path = Path(run_dir) / CALIBRATION
    if not path.is_file():
        return None
    record = read_json(path)
    fitted_key, fitted_tta = record.get("checkpoint_key"), str(record.get("tta", "none"))
    if key is not None and fitted_key == key and fitted_tta == str(tta):
        return record
    if fitted_key == key:
        why = f"eval.tta={fitted_tta}, not eval.tta={tta}"
    else:
        was = fitted_key or "no content key: an older vitcli"
        why = f"checkpoints/{record.get('checkpoint', 'best')}.pt as it was then ({was}), not these weights ({key})"
    warning = (f"ignoring the temperature in {path}: it was fitted with {why}; refit it with "
               f"`vitcli eval run={run_dir} eval.calibrate=temperature`")
    if warning not in _warned:
        _warned.add(warning)
        log.warning(warning)
    return None


def read_temperature(run_dir: str | Path, key: str | None, tta: str = "none") -> float | None:
    """The temperature of `read_calibration`, else None."""
    record = read_calibration(run_dir, key, tta)
    return None if record is None else float(record["temperature"])


def write_temperature(run_dir: str | Path, record: dict[str, Any]) -> Path:
    """calibration.json: the temperature with the content key and TTA of the weights it was fitted on."""
    path = Path(run_dir) / CALIBRATION
    write_json(path, record)
    return path


def eval_path(run_dir: str | Path, name: str) -> Path:
    return Path(run_dir) / EVAL / name


def checkpoint_path(run_dir: Path, which: str) -> Path:
    """checkpoints/<which>.pt, or the sharded checkpoint checkpoints/<which> (a link to a directory of
    shards, trainer.strategy=fsdp) when the run has that instead."""
    sharded = Path(run_dir) / CHECKPOINTS / which
    return sharded if sharded.is_dir() else Path(run_dir) / CHECKPOINTS / f"{which}.pt"


def has_checkpoint(run_dir: Path, which: str) -> bool:
    return checkpoint_path(run_dir, which).exists()


def require_run_dir(run: str | Path, setting: str = "run") -> Path:
    """A run dir that exists and holds config.yaml, else a UserError saying what to pass."""
    run_dir = Path(run).expanduser()
    if not run_dir.is_dir():
        raise UserError(f"{setting}={run}: no such directory (pass a run directory such as runs/default/<timestamp>, "
                        "or latest; `vitcli runs` lists them)")
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
    if not path.exists():
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
    if not has_checkpoint(run_dir, "last"):
        raise UserError(f"resume={cfg.resume}: no checkpoints/last.pt to resume from")
    saved = load_run_config(run_dir)
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        if key.startswith("hydra") or key in ("resume", "runs_root", "data_check"):
            continue
        if "." not in key:
            raise UserError(
                f"resume keeps the run's own '{key}' choice; only dotted overrides such as trainer.epochs=30 apply"
            )
        OmegaConf.update(saved, key, override.value(), merge=True)
    saved.resume = str(run_dir)
    saved.data_check = cfg.data_check  # this command's own: a data change accepted once is not accepted for good
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
