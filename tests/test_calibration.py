"""Calibration: ECE / NLL / reliability diagram in `vitcli eval`, temperature scaling fitted on val,
stored with the run and used by predict and `ensemble method=mean_prob`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vitcli.tasks.calibration import (
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
)


def _overconfident(n: int, seed: int):
    """Logits whose argmax is right ~75% of the time but whose softmax says ~100%."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, n)
    logits = rng.normal(0.0, 1.0, (n, 5))
    logits[np.arange(n), labels] += 1.5
    return 12.0 * logits, labels


def test_temperature_scaling_lowers_ece_of_an_overconfident_model():
    val_logits, val_labels = _overconfident(2000, 0)
    test_logits, test_labels = _overconfident(2000, 1)
    t = fit_temperature(val_logits, val_labels)
    assert t > 2.0  # it had to soften the probabilities
    before = expected_calibration_error(test_logits, test_labels)
    after = expected_calibration_error(test_logits, test_labels, temperature=t)
    assert before > 0.1 and after < before / 3
    assert negative_log_likelihood(test_logits, test_labels, t) < negative_log_likelihood(test_logits, test_labels)
    # a perfectly calibrated model keeps T close to 1
    rng = np.random.default_rng(2)
    logits = rng.normal(0.0, 2.0, (4000, 4))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(4, p=p) for p in probs])
    assert 0.85 < fit_temperature(logits, labels) < 1.15


def test_ece_matches_its_definition():
    logits = np.log(np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.6, 0.4]]))
    labels = np.array([0, 0, 1, 0])
    # two filled bins weighted by their size: 3 samples at confidence 0.9 (accuracy 2/3), 1 at 0.6 (accuracy 1)
    expected = 0.75 * abs(2 / 3 - 0.9) + 0.25 * abs(1.0 - 0.6)
    assert expected_calibration_error(logits, labels) == pytest.approx(expected)


def test_eval_calibrate_stores_temperature_used_by_predict_and_ensemble(tiny_run_copy, compose, tmp_path):
    from vitcli.commands.evaluate import run_eval
    from vitcli.core.predictions import load_predictions
    from vitcli.tasks.predict import predict_split

    run = tiny_run_copy
    result = run_eval(compose("eval", [f"run={run}", "eval.calibrate=temperature", "device=cpu"]))
    assert 0.0 <= result["ece"] <= 1.0 and result["nll"] > 0
    cal = json.loads((run / "calibration.json").read_text())
    assert cal["fitted_on"] == "val" and cal["temperature"] > 0
    assert result["ece_calibrated"] == pytest.approx(cal["ece_after"])  # fitted on the split it scored
    saved = json.loads((run / "eval" / "val_best.json").read_text())
    assert saved["ece"] == pytest.approx(result["ece"]) and saved["temperature"] == pytest.approx(cal["temperature"])
    assert (run / "plots" / "reliability_val_best.png").stat().st_size > 5000
    preds, _, _ = predict_split(run, "val", device="cpu", submission="never")
    assert load_predictions(run / "predictions" / "val.npz").source["temperature"] == pytest.approx(cal["temperature"])
    # ensemble mean_prob divides each member's logits by the temperature stored with it
    from vitcli.tasks.ensemble import member_temperatures

    assert member_temperatures([run, run], None) == pytest.approx([cal["temperature"]] * 2)
    assert member_temperatures([run, run], [1.0, 2.0]) == [1.0, 2.0]


def test_calibration_needs_the_split_it_fits_on(tiny_run, cli):
    out = cli("eval", f"run={tiny_run}", "eval.calibrate=temperature", "eval.calibrate_split=minival", "save=false",
              check=False)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "eval.calibrate_split=minival: the temperature is fitted on a labelled split" in out.stderr
