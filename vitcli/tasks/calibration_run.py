"""Calibration of a trained run: ECE / NLL / reliability diagram for `vitcli eval`, and
`eval.calibrate=temperature`, which fits one temperature on a labelled split (val by default)
and stores it in <run>/calibration.json for predict and `ensemble method=mean_prob`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vitcli.core import runs
from vitcli.core.errors import UserError
from vitcli.core.io import write_json
from vitcli.engine.inference import run_split
from vitcli.tasks.calibration import (
    ECE_BINS,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
)
from vitcli.viz.reliability import plot_reliability

log = logging.getLogger("vitcli")


def calibrate_run(run: str | Path, checkpoint: str = "best", split: str = "val", device: str = "auto",
                  batch_size: int | None = None, precision: Any = None, preds: Any = None,
                  write: bool = True) -> dict[str, Any]:
    """Fit the temperature of a run's checkpoint on a labelled split; write calibration.json.

    Args:
        preds: that split's Predictions when the caller already has them (else predicted here).
    """
    if preds is None:
        try:
            _, preds = run_split(run, split, checkpoint, device, batch_size, precision=precision)
        except UserError as err:
            raise UserError(f"eval.calibrate_split={split}: the temperature is fitted on a labelled split the run "
                            f"does not have ({err})") from err
    if preds.labels is None:
        raise UserError(f"eval.calibrate_split={split} has no labels in {run}; fit the temperature on val or minival")
    logits, labels = preds.logits, preds.labels
    t = fit_temperature(logits, labels)
    record = {"temperature": t, "checkpoint": str(checkpoint), "fitted_on": split, "samples": int(len(labels)),
              "nll_before": negative_log_likelihood(logits, labels),
              "nll_after": negative_log_likelihood(logits, labels, t),
              "ece_before": reliability_bins(logits, labels).ece, "ece_after": reliability_bins(logits, labels,
                                                                                             temperature=t).ece}
    if write:
        write_json(Path(run) / runs.CALIBRATION, record)
    log.info(f"temperature {t:.3f} fitted on {split} ({len(labels)} samples): NLL {record['nll_before']:.4f} -> "
             f"{record['nll_after']:.4f}, ECE {100 * record['ece_before']:.2f}% -> {100 * record['ece_after']:.2f}%")
    return record


def add_calibration(result: dict[str, Any], preds: Any, run: str | Path, checkpoint: str, tag: str,
                    calibrate: str = "none", calibrate_split: str = "val", save: bool = True,
                    **predict_args: Any) -> list[Path]:
    """ECE (15 bins) and NLL of the scored split into `result`; with calibrate=temperature first fit
    and store the temperature; with a stored temperature for this checkpoint also the calibrated
    figures. Draws plots/reliability_<tag>.png when `save`; returns the paths written."""
    logits, labels = preds.logits, preds.labels
    raw = reliability_bins(logits, labels, ECE_BINS)
    result.update(ece=raw.ece, nll=negative_log_likelihood(logits, labels), ece_bins=ECE_BINS)
    if str(calibrate) == "temperature":
        same = calibrate_split == result["split"] and result.get("tta", "none") == "none"
        calibrate_run(run, checkpoint, calibrate_split, preds=preds if same else None, write=save, **predict_args)
    panels = [("uncalibrated", raw)]
    t = runs.read_temperature(run, checkpoint)
    if t is not None:
        scaled = reliability_bins(logits, labels, ECE_BINS, temperature=t)
        result.update(temperature=t, ece_calibrated=scaled.ece,
                      nll_calibrated=negative_log_likelihood(logits, labels, t))
        panels.append((f"temperature {t:.2f}", scaled))
        log.info(f"calibration on {result['split']}: ECE {100 * raw.ece:.2f}% -> {100 * scaled.ece:.2f}%, "
                 f"NLL {result['nll']:.4f} -> {result['nll_calibrated']:.4f} (T={t:.3f})")
    else:
        log.info(f"calibration on {result['split']}: ECE {100 * raw.ece:.2f}%, NLL {result['nll']:.4f} "
                 "(eval.calibrate=temperature fits a temperature)")
    if not save:
        return []
    title = f"{Path(run).parent.name}/{Path(run).name}: {tag}"
    return [plot_reliability(panels, runs.plot_path(run, f"reliability_{tag}.png"), title)]
