"""What every tracker shares: which ones a config turns on, the interface the loop calls, the
failure rule (one warning, then off: a tracker never stops a run), and the names of the
metrics as trackers that group by prefix show them (train/*, val/*, epoch/*)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

from vitcli.core.io import finite_or_none

log = logging.getLogger("vitcli")

TRACKERS = ("wandb", "mlflow", "tensorboard")
MULTIRUN_RECORD = "multirun.yaml"  # Hydra writes it into a sweep dir before the jobs start
TRIAL_ENV = "VITCLI_OPTUNA_TRIAL"  # hydra_plugins/vitcli_optuna_sweeper/trial.py: the job's trial, for its ranks


def active_backends(cfg: Any) -> list[str]:
    """The trackers a config turns on, beside csv/jsonl: logger.backends.<name> (set by each logger
    option, so logger=[wandb,mlflow] turns on both), and logger.name for configs saved before
    `backends` existed."""
    lc = cfg.get("logger") if cfg is not None else None
    if lc is None:
        return []
    flags = lc.get("backends") or {}
    on = [b for b in TRACKERS if flags.get(b)]
    name = str(lc.get("name") or "csv")
    if name in TRACKERS and name not in on:
        on.append(name)
    return on


def one_line(err: BaseException, limit: int = 400) -> str:
    """An error as one line of at most `limit` characters (client errors can be pages long)."""
    text = str(err).strip()
    line = f"{type(err).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")
    return line if len(line) <= limit else line[: limit - 3] + "..."


class Tracker:
    """One tracking backend behind MetricsLogger (engine/tracking/files.py).

    Opened lazily on the first record (`_open`); `_step`, `_epoch` and `_finish` do the work.
    Any exception, at open or later, logs one warning and turns the tracker off for the rest of
    the run: training, the csv/jsonl files and the other trackers go on.
    """

    name = "tracker"

    def __init__(self, run_dir: Path, cfg: Any):
        self.run_dir, self.cfg = Path(run_dir), cfg
        self.failed = False
        self.opened = False

    def start(self) -> bool:
        """Open the backend once; False when it is off (it failed)."""
        if self.failed:
            return False
        if not self.opened:
            try:
                self._open()
                self.opened = True
            except Exception as err:
                self._disable(err)
        return not self.failed

    def _guard(self, fn: Callable[..., Any], *args: Any) -> None:
        if not self.start():
            return
        try:
            fn(*args)
        except Exception as err:
            self._disable(err)

    def _disable(self, err: BaseException) -> None:
        log.warning(f"{self.name} logging is off for this run: {one_line(err)}")
        self.failed = True

    def log_step(self, record: dict[str, Any]) -> None:
        self._guard(self._step, record)

    def log_epoch(self, record: dict[str, Any]) -> None:
        self._guard(self._epoch, record)

    def resume_at(self, epoch: int, step: int) -> None:
        """The run resumes from a checkpoint at this epoch / optimizer step (before any record)."""

    def finish(self, summary: dict[str, Any]) -> None:
        """The run ended (completed, pruned, failed, interrupted or requeued): final figures and files."""
        self._guard(self._finish, summary)

    def _open(self) -> None:
        raise NotImplementedError

    def _step(self, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def _epoch(self, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def _finish(self, summary: dict[str, Any]) -> None:
        raise NotImplementedError


def step_scalars(record: dict[str, Any]) -> dict[str, Any]:
    """A step record as train/loss, train/lr, train/images_per_s (finite numbers or None)."""
    return {f"train/{k.removeprefix('train_')}": finite_or_none(v) for k, v in record.items()
            if k not in ("kind", "epoch", "global_step") and isinstance(v, (int, float))}


def epoch_scalars(record: dict[str, Any]) -> dict[str, Any]:
    """An epoch record as val/top1, val/top5, val/loss and epoch/<the rest> (train_loss, lr, ...)."""
    out = {}
    for key, value in record.items():
        if key not in ("epoch", "kind") and isinstance(value, (int, float)):
            out[f"val/{key[4:]}" if key.startswith("val_") else f"epoch/{key}"] = finite_or_none(value)
    return out


def numeric(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The top-level finite numbers of a result dict as prefix/key (nested dicts, such as per-class
    figures keyed by class names from the data, stay in the JSON files)."""
    return {f"{prefix}/{k}" if prefix else str(k): float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and finite_or_none(v) is not None}


def sweep_job(run_dir: Path | None = None) -> dict[str, Any] | None:
    """The Hydra multirun job this process runs: its sweep dir, job number and optuna trial number;
    None outside a multirun. Processes the job started (the torchrun ranks of trainer.devices=N)
    are not Hydra multirun jobs: for them it is the run dir's parent when Hydra's multirun.yaml is
    there, with the trial from the environment the job passes on (engine/pruning.trial_env)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            hc = HydraConfig.get()
            trial = hc.sweeper.get("trial") if "sweeper" in hc else None
            return {"sweep_dir": Path(str(hc.sweep.dir)), "job": int(hc.job.num),
                    "trial": None if trial is None else int(trial)}
    except Exception:  # no Hydra context (library use)
        pass
    if run_dir is None or not (Path(run_dir).parent / MULTIRUN_RECORD).is_file():
        return None
    link = json.loads(os.environ.get(TRIAL_ENV) or "{}")
    name = Path(run_dir).name
    return {"sweep_dir": Path(run_dir).parent, "job": int(name) if name.isdigit() else None,
            "trial": link.get("number")}
