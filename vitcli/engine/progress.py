"""Training progress: a rich bar on a terminal, periodic plain lines elsewhere.

On CI, SLURM or nohup (stdout not a terminal) a bar would flood the log with
redraws, so progress becomes one log line every `log_interval` steps.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger("vitcli")


def choose_mode(mode: str) -> str:
    if mode == "auto":
        return "bar" if sys.stdout.isatty() else "plain"
    return str(mode)  # the schema (Progress) already refused anything else


class EpochProgress:
    """One epoch's progress: `advance(batch)` after every micro-batch (no numbers, so no device
    read), `show(batch, loss, lr, images_per_s)` at log points with the figures read back there."""

    def __init__(self, mode: str, epoch: int, epochs: int, total: int, log_interval: int, start: int = 0):
        self.mode, self.epoch, self.epochs = mode, epoch, epochs
        self.total, self.log_interval = total, max(1, log_interval)
        self._bar: Any = None
        if mode == "bar":
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn(f"epoch {epoch + 1}/{epochs}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[stats]}"),
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._bar.start()
            self._task = self._bar.add_task("train", total=total, completed=start, stats="")

    def advance(self, batch: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=batch + 1)

    def show(self, batch: int, loss: float, lr: float, images_per_s: float) -> None:
        stats = f"loss {loss:.4f}  lr {lr:.2e}  {images_per_s:,.0f} img/s"
        if self._bar is not None:
            self._bar.update(self._task, completed=batch + 1, stats=stats)
        elif self.mode == "plain":
            log.info(f"epoch {self.epoch + 1}/{self.epochs} step {batch + 1}/{self.total}  {stats}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
