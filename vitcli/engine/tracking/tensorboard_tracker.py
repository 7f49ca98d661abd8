"""TensorBoard (logger=tensorboard), written with torch.utils.tensorboard into <run_dir>/tensorboard:
train/loss, train/lr, train/images_per_s at step=global_step; val/*, epoch/* at step=epoch; the
config as text; at the end the run's plots as images (curves, confusion, errors, explain); after
a -m sweep one hparams row per job (its swept values and final metrics).
`tensorboard --logdir runs/` shows every run."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from vitcli.core import runs
from vitcli.engine.tracking.base import Tracker, epoch_scalars, numeric, step_scalars

log = logging.getLogger("vitcli")

HPARAM_METRICS = ("val_top1", "val_top5", "val_loss", "epochs")  # sweep_summary.csv columns -> hparams/<name>


def log_dir(run_dir: Path) -> Path:
    return Path(run_dir) / runs.TENSORBOARD


def writer(run_dir: Path, purge_step: int | None = None) -> Any:
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(log_dir(run_dir)), purge_step=purge_step)


def as_markdown(text: str) -> str:
    """Text shown as it is (TensorBoard renders markdown): an indented code block."""
    return "\n".join("    " + line for line in text.splitlines())


def add_images(w: Any, files: list[Path], step: int) -> None:
    """PNG plots as images at `step`, tagged plots/<name>."""
    import numpy as np
    from PIL import Image

    for path in files:
        if Path(path).suffix == ".png" and Path(path).is_file():
            with Image.open(path) as img:
                w.add_image(f"plots/{Path(path).stem}", np.asarray(img.convert("RGB")), step, dataformats="HWC")


class TensorBoardTracker(Tracker):
    """A SummaryWriter on <run_dir>/tensorboard, opened at the first record."""

    name = "tensorboard"

    def __init__(self, run_dir: Path, cfg: Any):
        super().__init__(run_dir, cfg)
        self.w: Any = None
        self.purge_step: int | None = None

    def resume_at(self, epoch: int, step: int) -> None:
        """A resumed run: what earlier event files hold after the checkpoint's step is dropped."""
        self.purge_step = step + 1

    def _open(self) -> None:
        from omegaconf import OmegaConf

        self.w = writer(self.run_dir, self.purge_step)
        self.w.add_text("config", as_markdown(OmegaConf.to_yaml(self.cfg, resolve=True)), 0)
        self.w.add_text("run_dir", str(self.run_dir.resolve()), 0)

    def _scalars(self, scalars: dict[str, Any], step: int) -> None:
        for key, value in scalars.items():
            if value is not None:
                self.w.add_scalar(key, value, step)

    def _step(self, record: dict[str, Any]) -> None:
        self._scalars(step_scalars(record), int(record.get("global_step") or 0))

    def _epoch(self, record: dict[str, Any]) -> None:
        self._scalars(epoch_scalars(record), int(record["epoch"]))
        self.w.flush()

    def _finish(self, summary: dict[str, Any]) -> None:
        step = int(summary.get("epochs_completed") or 0)
        self._scalars({f"best/{k}": v for k, v in numeric(summary.get("best") or {}).items()}, step)
        if self.cfg.logger.get("tensorboard", {}).get("images", True):
            add_images(self.w, sorted((self.run_dir / runs.PLOTS).glob("*.png")), step)
        self.w.add_text("summary", as_markdown(json.dumps(summary, indent=2, default=str)), step)
        self.w.close()
        self.w = None


def attach(run_dir: Path, cfg: Any, command: str, metrics: dict[str, Any], files: list[Path],
           tag: str | None = None, base: Path | None = None) -> None:
    """A command's metrics (<command>/<tag>/<name>) and images in the run's event files, at step =
    the run's epochs."""
    step = int(runs.read_summary(run_dir).get("epochs_completed") or 0) if (Path(run_dir) / runs.SUMMARY).is_file() else 0
    prefix = f"{command}/{tag}" if tag else command
    with writer(run_dir) as w:
        for key, value in numeric(metrics, prefix).items():
            w.add_scalar(key, value, step)
        if cfg.logger.get("tensorboard", {}).get("images", True):
            add_images(w, files, step)


def _hparam(value: Any) -> Any:
    """A swept value as TensorBoard's hparams plugin takes it: a number when it reads as one."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def write_sweep_hparams(rows: list[dict[str, Any]], keys: list[str]) -> None:
    """One hparams session per job of a -m sweep, in the job's own event dir, so TensorBoard's
    HPARAMS tab on the sweep dir lists every job with its swept values, status and metrics."""
    from torch.utils.tensorboard.summary import hparams

    values = {k: [_hparam(r.get(k, "")) for r in rows] for k in keys}
    domains = {k: sorted({str(v) for v in vs}) for k, vs in values.items() if any(isinstance(v, str) for v in vs)}
    for i, row in enumerate(rows):
        hp = {k: (str(values[k][i]) if k in domains else values[k][i]) for k in keys}
        hp["status"] = str(row.get("status"))
        metrics = {f"hparams/{m}": float(row[m]) for m in HPARAM_METRICS if isinstance(row.get(m), (int, float))}
        run_dir = Path(str(row["run_dir"]))
        if not metrics and not run_dir.is_dir():
            continue
        exp, ssi, sei = hparams(hp, metrics, {**domains, "status": sorted({str(r.get("status")) for r in rows})})
        with writer(run_dir) as w:
            for summary in (exp, ssi, sei):
                w.file_writer.add_summary(summary)
            for key, value in metrics.items():
                w.add_scalar(key, value)
