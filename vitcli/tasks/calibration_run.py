"""Calibration of a trained run: ECE / NLL / reliability diagram for `vitcli eval`, and
`eval.calibrate=temperature`, which fits one temperature on a labelled split and stores it in
<run>/calibration.json for predict and `ensemble method=mean_prob`.

The temperature is fitted on minival when the run carved one (data.minival_fraction), else on
val (eval.calibrate_split picks another), under the TTA asked for, and keyed to the content of
the weights it was fitted on: a best.pt rewritten by a resumed run does not inherit it. The
eval JSON says which split T was fitted on (`temperature_fitted_on`) and which split the ECE
comes from (`ece_split`); when they are the same split, the calibrated ECE / NLL are
cross-fitted (T refitted on one half of the split, by a hash of the ids, scored on the other).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vitcli.core import runs
from vitcli.core.errors import UserError
from vitcli.engine.inference import run_split
from vitcli.tasks.calibration import (
    ECE_BINS,
    cross_fitted_logits,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
)
from vitcli.viz.reliability import plot_reliability

log = logging.getLogger("vitcli")


def calibration_split(run: str | Path) -> str:
    """Where the temperature is fitted by default: minival when the run carved one, else val."""
    return "minival" if runs.load_run_config(Path(run)).data.minival_fraction else "val"


def calibrate_run(run: str | Path, checkpoint: str = "best", split: str | None = None, tta: str = "none",
                  device: str = "auto", batch_size: int | None = None, precision: Any = None, preds: Any = None,
                  write: bool = True, data_check: str = "strict") -> dict[str, Any]:
    """Fit the temperature of a run's checkpoint on a labelled split; write calibration.json.

    Args:
        split: null: calibration_split(run).
        tta: the test-time augmentation the temperature is fitted (and later applied) under.
        preds: that split's Predictions when the caller already has them (else predicted here).
    """
    split = split or calibration_split(run)
    if preds is None:
        try:
            _, preds = run_split(run, split, checkpoint, device, batch_size, tta, precision=precision,
                                 data_check=data_check)
        except UserError as err:
            raise UserError(f"eval.calibrate_split={split}: the temperature is fitted on a labelled split the run "
                            f"does not have ({err})") from err
    if preds.labels is None:
        raise UserError(f"eval.calibrate_split={split} has no labels in {run}; fit the temperature on val or minival")
    logits, labels = preds.logits, preds.labels
    t = fit_temperature(logits, labels)
    record = {"temperature": t, "checkpoint": str(checkpoint), "checkpoint_key": preds.source.get("checkpoint_key"),
              "tta": str(tta), "fitted_on": split, "samples": int(len(labels)),
              "nll_before": negative_log_likelihood(logits, labels),
              "nll_after": negative_log_likelihood(logits, labels, t),
              "ece_before": reliability_bins(logits, labels).ece,
              "ece_after": reliability_bins(logits, labels, temperature=t).ece}
    if write:
        runs.write_temperature(run, record)
    log.info(f"temperature {t:.3f} fitted on {split} ({len(labels)} samples): NLL {record['nll_before']:.4f} -> "
             f"{record['nll_after']:.4f}, ECE {100 * record['ece_before']:.2f}% -> {100 * record['ece_after']:.2f}%")
    return record


def add_calibration(result: dict[str, Any], preds: Any, run: str | Path, checkpoint: str, tag: str,
                    calibrate: str = "none", calibrate_split: str | None = None, save: bool = True,
                    **predict_args: Any) -> list[Path]:
    """ECE (15 bins) and NLL of the scored split into `result`; with calibrate=temperature first fit
    (and, when `save`, store) the temperature; with a temperature for these weights and TTA also the
    calibrated figures. Draws plots/reliability_<tag>.png when `save`; returns the paths written."""
    logits, labels, split, tta = preds.logits, preds.labels, result["split"], str(result.get("tta", "none"))
    raw = reliability_bins(logits, labels, ECE_BINS)
    result.update(ece=raw.ece, nll=negative_log_likelihood(logits, labels), ece_bins=ECE_BINS, ece_split=split)
    if str(calibrate) == "temperature":
        fit_split = calibrate_split or calibration_split(run)
        record = calibrate_run(run, checkpoint, fit_split, tta, preds=preds if fit_split == split else None,
                               write=save, **predict_args)
    else:
        record = runs.read_calibration(run, preds.source.get("checkpoint_key"), tta)
    panels = [("uncalibrated", raw)]
    if record is not None:
        t, fitted_on = float(record["temperature"]), str(record["fitted_on"])
        if fitted_on == split:  # out-of-sample figures on the split T was fitted on
            scaled_logits, how = cross_fitted_logits(logits, labels, preds.ids), f"cross-fitted on {split} halves"
        else:
            scaled_logits, how = logits / t, f"fitted on {fitted_on}"
        scaled = reliability_bins(scaled_logits, labels, ECE_BINS)
        result.update(temperature=t, temperature_fitted_on=fitted_on, ece_calibrated=scaled.ece,
                      nll_calibrated=negative_log_likelihood(scaled_logits, labels), calibrated_by=how)
        panels.append((f"temperature {t:.2f} ({how})", scaled))
        log.info(f"calibration on {split}: ECE {100 * raw.ece:.2f}% -> {100 * scaled.ece:.2f}%, "
                 f"NLL {result['nll']:.4f} -> {result['nll_calibrated']:.4f} (T={t:.3f} {how})")
    else:
        log.info(f"calibration on {split}: ECE {100 * raw.ece:.2f}%, NLL {result['nll']:.4f} "
                 "(eval.calibrate=temperature fits a temperature)")
    if not save:
        return []
    title = f"{Path(run).parent.name}/{Path(run).name}: {tag}"
    return [plot_reliability(panels, runs.plot_path(run, f"reliability_{tag}.png"), title)]
