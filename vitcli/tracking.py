"""Metric logging that is always on: metrics.jsonl (one object per record),
metrics.csv (epoch rows) and summary.json, all inside the run directory."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from vitcli.engine.checkpoint import atomic_write


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, obj: dict[str, Any]) -> None:
    data = json.dumps(obj, indent=2, default=str).encode() + b"\n"
    atomic_write(Path(path), lambda f: f.write(data))


class MetricsLogger:
    """Appends step and epoch records to metrics.jsonl and epoch rows to metrics.csv."""

    def __init__(self, run_dir: Path, cfg: Any = None):
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.jsonl = self.run_dir / "metrics.jsonl"
        self.csv = self.run_dir / "metrics.csv"

    def log(self, record: dict[str, Any]) -> None:
        with open(self.jsonl, "a") as f:
            f.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")

    def log_epoch(self, record: dict[str, Any]) -> None:
        self.log({"kind": "epoch", **record})
        new = not self.csv.exists()
        with open(self.csv, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(record))
            if new:
                writer.writeheader()
            writer.writerow(record)

    def finish(self, summary: dict[str, Any]) -> None:
        """Called once when the run ends (completed, failed or interrupted)."""

    def truncate_after(self, epoch: int, step: int) -> None:
        """On resume, drop records written after the checkpoint being resumed from."""
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
            for row in rows:
                new = not self.csv.exists()
                with open(self.csv, "a", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=list(row))
                    if new:
                        writer.writeheader()
                    writer.writerow(row)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
