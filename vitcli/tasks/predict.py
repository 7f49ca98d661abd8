"""Predicting a trained run on a split: predictions/<split>.npz plus, for MiniPlaces
(submission=auto) or when asked (submission=always), the leaderboard submission files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitcli.core import runs
from vitcli.engine.inference import run_split
from vitcli.engine.tracking import attach_to_run
from vitcli.tasks import submission as sub


def predict_split(run: str | Path, split: str | None = None, checkpoint: str = "best", device: str = "auto",
                  batch_size: int | None = None, tta: str = "none", crop_fraction: float = 0.875,
                  submission: str = "auto", precision: Any = None,
                  data_check: str = "strict") -> tuple[Any, dict[str, Any], list[Path]]:
    """Predict a split, save predictions/<split>.npz (+ submissions): (Predictions, metrics, written paths).
    The npz records the content key of the weights, the TTA and the split's identity (its source).

    Args:
        split: null: test when the run's data has one, else val.
        precision: null: the precision the run trained with.
        data_check: strict: stop when the split or class names differ from the checkpoint's record.
    """
    result, preds = run_split(run, split, checkpoint, device, batch_size, tta, crop_fraction, precision, data_check)
    split = result["split"]
    written = [preds.save(runs.predictions_path(run, split))]
    if sub.should_write(submission, result.get("data"), preds.ids):
        written += sub.write_submissions(run, split, preds.ids, preds.logits)
    attach_to_run(run, "predict", result, [p for p in written if p.suffix != ".npz"], tag=split)  # the run's trackers
    return preds, result, written
