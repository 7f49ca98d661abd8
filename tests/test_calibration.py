"""Calibration: ECE / NLL / reliability diagram in `vitcli eval`, temperature scaling fitted on minival
(else val, with cross-fitted calibrated figures), stored with the run keyed to the weights and TTA it was
fitted on, and used by predict and `ensemble method=mean_prob`."""

from __future__ import annotations

import json
from pathlib import Path

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
    from vitcli.models.run_model import checkpoint_key
    from vitcli.tasks.predict import predict_split

    run = tiny_run_copy
    result = run_eval(compose("eval", [f"run={run}", "eval.calibrate=temperature", "device=cpu"]))
    assert 0.0 <= result["ece"] <= 1.0 and result["nll"] > 0
    cal = json.loads((run / "calibration.json").read_text())
    # no minival in this run: T is fitted on val, and the JSON says the calibrated figures are cross-fitted there
    assert cal["fitted_on"] == "val" and cal["temperature"] > 0 and cal["tta"] == "none"
    assert cal["checkpoint_key"] == checkpoint_key(run, "best")
    assert result["ece_split"] == "val" and result["temperature_fitted_on"] == "val"
    assert result["calibrated_by"] == "cross-fitted on val halves"
    saved = json.loads((run / "eval" / "val_best.json").read_text())
    assert saved["ece"] == pytest.approx(result["ece"]) and saved["temperature"] == pytest.approx(cal["temperature"])
    assert (run / "plots" / "reliability_val_best.png").stat().st_size > 5000
    preds, _, _ = predict_split(run, "val", device="cpu", submission="never")
    assert load_predictions(run / "predictions" / "val.npz").source["temperature"] == pytest.approx(cal["temperature"])
    # ensemble mean_prob divides each member's logits by the temperature stored for the weights that made them
    from vitcli.tasks.ensemble import member_temperatures

    assert member_temperatures([run, run], None, [preds.source] * 2) == pytest.approx([cal["temperature"]] * 2)
    assert member_temperatures([run, run], [1.0, 2.0], [preds.source] * 2) == [1.0, 2.0]
    other = {**preds.source, "tta": "flip"}  # fitted without TTA: not applied to TTA predictions
    assert member_temperatures([run, run], None, [other] * 2) is None


def test_cross_fitted_figures_are_out_of_sample():
    """On the split T is fitted on, the in-sample NLL is the minimum over T: cross-fitting scores each half
    with the T of the other half, so it cannot be lower (and here it is higher)."""
    from vitcli.tasks.calibration import cross_fitted_logits

    logits, labels = _overconfident(300, 5)
    ids = [f"val/{i:05d}" for i in range(300)]
    t = fit_temperature(logits, labels)
    in_sample = negative_log_likelihood(logits, labels, t)
    crossed = cross_fitted_logits(logits, labels, ids)
    assert negative_log_likelihood(crossed, labels) > in_sample
    assert negative_log_likelihood(crossed, labels) < negative_log_likelihood(logits, labels)  # still calibrated
    order = np.random.default_rng(0).permutation(300)  # the halves follow the ids, not the row order
    assert np.allclose(cross_fitted_logits(logits[order], labels[order], [ids[i] for i in order]), crossed[order])


@pytest.fixture(scope="module")
def minival_run(tmp_path_factory, train_tiny):
    """A one-epoch digits run that carved a minival (digits: a model that is not at a temperature bound)."""
    run = tmp_path_factory.mktemp("minival") / "run"
    train_tiny(run, "data=digits", "data.img_size=16", "data.minival_fraction=0.2", "trainer.epochs=1")
    return run


def test_temperature_is_fitted_on_minival_and_scored_on_val(minival_run, tmp_path, compose):
    import shutil

    from vitcli.commands.evaluate import run_eval
    from vitcli.engine.inference import run_split
    from vitcli.tasks.calibration import reliability_bins

    run = Path(shutil.copytree(minival_run, tmp_path / "run"))
    result = run_eval(compose("eval", [f"run={run}", "eval.calibrate=temperature", "device=cpu", "save=false"]))
    assert result["temperature_fitted_on"] == "minival" and result["ece_split"] == "val"
    assert result["calibrated_by"] == "fitted on minival"
    t = result["temperature"]
    _, val = run_split(run, "val", device="cpu")
    _, mini = run_split(run, "minival", device="cpu")
    assert t == pytest.approx(fit_temperature(mini.logits, mini.labels))  # not val's own temperature
    assert abs(t - fit_temperature(val.logits, val.labels)) > 1e-3
    assert result["ece_calibrated"] == pytest.approx(reliability_bins(val.logits, val.labels, temperature=t).ece)


def test_a_temperature_fitted_on_other_weights_is_ignored(tiny_run_copy, cli, compose):
    """Resuming rewrites last.pt: the temperature fitted on the old last.pt no longer applies."""
    from vitcli.core.predictions import load_predictions

    run = tiny_run_copy
    cli("eval", f"run={run}", "checkpoint=last", "eval.calibrate=temperature")
    assert json.loads((run / "calibration.json").read_text())["checkpoint"] == "last"
    cli("predict", f"run={run}", "checkpoint=last", "split=val")
    assert "temperature" in load_predictions(run / "predictions" / "val.npz").source
    cli("train", f"resume={run}", "trainer.epochs=3")  # one more epoch: other weights in last.pt
    out = cli("predict", f"run={run}", "checkpoint=last", "split=val")
    assert "temperature" not in load_predictions(run / "predictions" / "val.npz").source
    assert f"ignoring the temperature in {run}/calibration.json: it was fitted with checkpoints/last.pt as it was " \
           "then" in out.stdout
    out = cli("eval", f"run={run}", "checkpoint=last", "save=false")
    assert "(eval.calibrate=temperature fits a temperature)" in out.stdout


def test_calibration_needs_the_split_it_fits_on(tiny_run, cli):
    out = cli("eval", f"run={tiny_run}", "eval.calibrate=temperature", "eval.calibrate_split=minival", "save=false",
              check=False)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "eval.calibrate_split=minival: the temperature is fitted on a labelled split" in out.stderr
