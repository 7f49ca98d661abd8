"""What the loop says about an epoch and a run: which epochs are evaluated (trainer.eval_interval),
an epoch's log line, and the end-of-run table of where the wall time went (core/phases.py)."""

from __future__ import annotations

from typing import Any

from vitcli.core import phases
from vitcli.core.errors import UserError


# trainer.eval_interval=null: about this many evaluations a run, at least every AUTO_MAX_INTERVAL epochs
# (a 40-epoch run evaluates 8 times instead of 40; a run of under 16 epochs every epoch)
AUTO_EVALUATIONS, AUTO_MAX_INTERVAL = 8, 5


def eval_interval(trainer_cfg: Any) -> int:
    """trainer.eval_interval, checked: a whole number of epochs >= 1 (null: from trainer.epochs).

    >>> eval_interval({"epochs": 40, "eval_interval": None}), eval_interval({"epochs": 10, "eval_interval": None})
    (5, 1)
    """
    interval = trainer_cfg.get("eval_interval", 1)
    if interval is None:
        return min(AUTO_MAX_INTERVAL, max(1, int(trainer_cfg.get("epochs", 1)) // AUTO_EVALUATIONS))
    interval = int(interval)
    if interval < 1:
        raise UserError(f"trainer.eval_interval={interval} must be >= 1 (epochs between evaluations; 1: every epoch)")
    return interval


def evaluates(epoch: int, epochs: int, interval: int) -> bool:
    """Whether epoch `epoch` (1-based) is evaluated: every `interval`-th epoch, and always the last."""
    return epoch % max(interval, 1) == 0 or epoch >= epochs


def val_keys(ema: bool) -> list[str]:
    """The validation fields of an epoch record (None on epochs that were not evaluated)."""
    return ["val_top1", "val_top5", "val_loss"] + (["ema_top1", "ema_top5", "ema_loss"] if ema else [])


def epoch_line(record: dict[str, Any], epochs: int, improved: str | None) -> str:
    """The log line of an epoch (its validation figures when it was evaluated)."""
    line = f"epoch {record['epoch']}/{epochs}  train_loss {record['train_loss']:.4f}  "
    if record["val_top1"] is not None:
        line += (f"val_top1 {record['val_top1']:.2f}  val_top5 {record['val_top5']:.2f}  "
                 f"val_loss {record['val_loss']:.4f}  ")
        if record.get("ema_top1") is not None:
            line += f"ema_top1 {record['ema_top1']:.2f}  "
    return line + f"{record['images_per_s']:,.0f} img/s" + (f"  *best ({improved})*" if improved else "")


def print_phases(summary: dict[str, Any]) -> None:
    """The end-of-run table of where the wall time went (summary.json's `phases`)."""
    from rich.console import Console
    from rich.table import Table

    if not summary.get("phases"):
        return
    table = Table(title=f"where the time went ({summary['wall_s']:.1f}s wall)", title_justify="left")
    for column in ("phase", "seconds", "share", "count"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for row in phases.table_rows(summary):
        table.add_row(*row)
    Console(width=80).print(table)
