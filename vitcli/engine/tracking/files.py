"""The one place the loop logs to: metrics.jsonl (one object per record) and metrics.csv (epoch
rows), always on, and every tracker the config turns on (W&B, MLflow, TensorBoard)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from vitcli.core import runs
from vitcli.core.io import append_csv, append_jsonl
from vitcli.engine.tracking.base import Tracker, active_backends


def create_trackers(run_dir: Path, cfg: Any) -> list[Tracker]:
    """The config's trackers for a training run (none imports its library before its first record)."""
    made: list[Tracker] = []
    for name in active_backends(cfg):
        if name == "wandb":
            from vitcli.engine.tracking.wandb_tracker import WandbSink as cls
        elif name == "mlflow":
            from vitcli.engine.tracking.mlflow_tracker import MlflowTracker as cls  # type: ignore[assignment]
        else:
            from vitcli.engine.tracking.tensorboard_tracker import TensorBoardTracker as cls  # type: ignore[assignment]
        made.append(cls(run_dir, cfg))
    return made


class MetricsLogger:
    """Appends step and epoch records to metrics.jsonl and epoch rows to metrics.csv, and hands
    each record to the trackers (rank 0 only: other ranks get NullMetrics)."""

    def __init__(self, run_dir: Path, cfg: Any = None):
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.jsonl = self.run_dir / runs.METRICS_JSONL
        self.csv = self.run_dir / runs.METRICS_CSV
        self.trackers = create_trackers(self.run_dir, cfg) if cfg is not None else []

    @property
    def wandb(self) -> Any:
        """The W&B tracker when logger has wandb (checkpoints carry its run id), else None."""
        return next((t for t in self.trackers if t.name == "wandb"), None)

    def log(self, record: dict[str, Any]) -> None:
        append_jsonl(self.jsonl, record)
        if record.get("kind") == "step":
            for tracker in self.trackers:
                tracker.log_step(record)

    def log_epoch(self, record: dict[str, Any]) -> None:
        append_jsonl(self.jsonl, {"kind": "epoch", **record})
        for tracker in self.trackers:
            tracker.log_epoch(record)
        append_csv(self.csv, [record])

    def finish(self, summary: dict[str, Any]) -> None:
        """Called once when the run ends (completed, failed or interrupted)."""
        for tracker in self.trackers:
            tracker.finish(summary)

    def truncate_after(self, epoch: int, step: int) -> None:
        """On resume, drop records written after the checkpoint being resumed from."""
        for tracker in self.trackers:
            tracker.resume_at(epoch, step)
        if self.jsonl.exists():
            keep = []
            for line in self.jsonl.read_text().splitlines():
                rec = json.loads(line)
                if rec.get("kind") == "epoch" and rec.get("epoch", 0) > epoch:
                    continue
                if rec.get("kind") == "step" and rec.get("global_step", 0) > step:
                    continue
                keep.append(line)
            self.jsonl.write_text("".join(k + "\n" for k in keep))
        if self.csv.exists():
            with open(self.csv, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= epoch]
            self.csv.unlink()
            append_csv(self.csv, rows)


class NullMetrics:
    """What DDP ranks other than 0 log: nothing (rank 0 writes the files and feeds the trackers)."""

    def __init__(self) -> None:
        self.jsonl = self.csv = Path(os.devnull)
        self.trackers: list[Tracker] = []
        self.wandb = None

    def log(self, record: dict[str, Any]) -> None:
        pass

    log_epoch = log

    def finish(self, summary: dict[str, Any]) -> None:
        pass

    def truncate_after(self, epoch: int, step: int) -> None:
        pass
