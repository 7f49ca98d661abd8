"""`vitcli probe`: frozen features cached per weights and layers, weighted k-NN, a linear probe
with C chosen on val, few-shot over seeds; predictions an ensemble can combine with runs."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from vitcli.core.errors import UserError
from vitcli.tasks import probe_methods as pm

DIGITS = ["model=vit_pico", "model.patch_size=4", "data=digits", "data.img_size=16", "data.batch_size=64",
          "augmentation=none", "trainer.epochs=8", "trainer.progress=none", "trainer.export_safetensors=false"]


def test_knn_votes_are_temperature_weighted_and_fewshot_recovers_clusters():
    train = np.array([[1.0, 0.0], [0.0, 1.0], [0.05, 1.0]])
    labels = np.array([0, 1, 1])
    query = np.array([[1.0, 0.9]])  # nearest is class 0 (cos 0.74), then the two class-1 points (0.67, 0.70)
    share = pm.knn_scores(train, labels, query, 2, k=3, temperature=0.07)[0]
    sims = np.array([1.0, 0.9, 0.05 + 0.9]) / (np.linalg.norm(train, axis=1) * np.linalg.norm(query))
    w = np.exp(sims / 0.07)
    assert share == pytest.approx([w[0] / w.sum(), (w[1] + w[2]) / w.sum()], rel=1e-4)
    assert pm.knn_scores(train, labels, query, 2, k=1)[0].argmax() == 0  # k counts
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (4, 16))
    y = np.repeat(np.arange(4), 30)
    x = centres[y] + rng.normal(0, 1, (120, 16))
    idx = pm.sample_shots(y, 5, seed=0)
    assert np.bincount(y[idx]).tolist() == [5] * 4
    scores, = pm.fewshot_scores(x[idx], y[idx], [x], 4)
    assert (scores.argmax(axis=2) == y).mean(axis=1).max() > 0.95


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory, make_trainer):
    run = tmp_path_factory.mktemp("probe") / "digits"
    make_trainer(run, *DIGITS).fit()
    return run


@pytest.mark.slow
def test_probes_of_a_trained_digits_run_score_high_and_of_an_untrained_model_low(digits_run, compose, tmp_path):
    from vitcli.tasks.probe import run_probe

    start = time.perf_counter()
    trained = {m: run_probe(compose("probe", [f"run={digits_run}", f"method={m}", "trainer.device=cpu"]), digits_run)
               for m in ("knn", "linear")}
    seconds = time.perf_counter() - start
    untrained = {m: run_probe(compose("probe", [*DIGITS, f"method={m}", "trainer.device=cpu"]), tmp_path)
                 for m in ("knn", "linear")}
    print(f"probes of the trained run: {seconds:.1f} s; trained {({m: r['top1'] for m, r in trained.items()})}, "
          f"untrained {({m: r['top1'] for m, r in untrained.items()})}")
    # measured: trained run (val 86.9%) k-NN 90.8 / linear 91.1; untrained k-NN 59.4 / linear 92.8
    assert trained["knn"]["top1"] > 85 and trained["linear"]["top1"] > 85
    assert untrained["knn"]["top1"] < 70 and trained["knn"]["top1"] > untrained["knn"]["top1"] + 20
    # not asserted: a logistic regression on an untrained ViT's 128 random features also reads 8x8
    # digits well (92.8%), so on digits only the k-NN probe separates trained from untrained features
    # the second probe reused the first one's cached features; one file per split, fp16
    cached = list((digits_run / "probe" / "features").glob("*/train.npz"))
    assert len(cached) == 1
    with np.load(cached[0]) as z:
        assert z["features"].dtype == np.float16 and len(z["labels"]) == trained["knn"]["train_samples"]
    saved = json.loads((digits_run / "probe" / "knn.json").read_text())
    assert saved["top1"] == trained["knn"]["top1"] and saved["k"] in (10, 20) and "top5" in saved
    assert trained["linear"]["C"] in [float(c) for c in pm.LINEAR_CS]


@pytest.mark.slow
def test_fewshot_reports_mean_and_spread_and_rejects_too_many_shots(digits_run, compose):
    from vitcli.tasks.probe import run_probe

    result = run_probe(compose("probe", [f"run={digits_run}", "method=fewshot", "probe.shots=[1,5]",
                                         "probe.seeds=3", "trainer.device=cpu"]), digits_run)
    one, five = result["per_shot"]["1"]["val"], result["per_shot"]["5"]["val"]
    assert len(five["top1_per_seed"]) == 3 and five["top1_std"] >= 0
    assert five["top1_mean"] > one["top1_mean"] > 30
    with pytest.raises(UserError, match=r"probe.shots=\[1, 500\]: every n must be between 1 and \d+"):
        run_probe(compose("probe", [f"run={digits_run}", "method=fewshot", "probe.shots=[1,500]",
                                    "trainer.device=cpu"]), digits_run)


def test_probe_command_and_an_ensemble_of_a_probe_with_its_run(cli, tiny_run_copy, tmp_path):
    run = tiny_run_copy
    out = cli("probe", f"run={run}", "method=linear", "trainer.device=cpu")
    assert "probe linear" in out.stderr + out.stdout
    result = json.loads((run / "probe" / "linear.json").read_text())
    assert set(result["splits"]) >= {"val"} and 0 <= result["top1"] <= 100
    from vitcli.core.predictions import load_predictions

    preds = load_predictions(run / "probe" / "linear" / "predictions" / "val.npz")
    assert preds.labels is not None and len(preds) == result["splits"]["val"]["samples"]
    ens = cli("ensemble", f"runs=[{run},{run}/probe/linear]", "split=val", "method=mean_prob",
              f"out={tmp_path / 'ens'}", "device=cpu")
    assert (tmp_path / "ens" / "predictions" / "val.npz").is_file(), ens.stdout + ens.stderr
    bad = cli("probe", f"run={run}", "probe.layers=tokens", "probe.blocks=99", check=False)
    assert bad.returncode != 0 and "probe.blocks=99" in bad.stderr and "Traceback" not in bad.stderr
