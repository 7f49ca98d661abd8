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
    predictions = pm.fewshot_fit(x[idx], y[idx], 4).predictions(x)
    assert predictions.shape == (len(pm.FEWSHOT_L2), 120) and (predictions == y).mean(axis=1).max() > 0.95


def _overlapping_classes(classes: int, per_class: int, dim: int, seed: int):
    """Samples of Gaussian classes (the same centres for every seed) that overlap: predictions can differ."""
    centres = np.random.default_rng(0).normal(0, 1, (classes, dim))
    labels = np.repeat(np.arange(classes), per_class)
    return centres[labels] + np.random.default_rng(seed).normal(0, 1.6, (len(labels), dim)), labels


@pytest.mark.parametrize("shots", [2, 10])  # N = 24 < D + 1 = 41, and N = 120 > 41
def test_fewshot_primal_and_dual_forms_predict_the_same(shots):
    train, labels = _overlapping_classes(12, shots, 40, seed=shots)
    queries, truth = _overlapping_classes(12, 25, 40, seed=100 + shots)
    primal = pm.fewshot_fit(train, labels, 12, form="primal")
    dual = pm.fewshot_fit(train, labels, 12, form="dual")
    assert pm.fewshot_fit(train, labels, 12).form == ("primal" if shots == 10 else "dual")
    assert primal.eigs.shape == (41,) and dual.eigs.shape == (12 * shots,)
    predicted = primal.predictions(queries, chunk=64)
    np.testing.assert_array_equal(predicted, dual.predictions(queries, chunk=64))
    assert len({tuple(row) for row in predicted}) > 2  # the penalty changes the predictions
    assert 0.2 < (predicted == truth).mean(axis=1).max() < 0.95  # neither trivial nor random
    for reg in (pm.FEWSHOT_L2[0], pm.FEWSHOT_L2[8], pm.FEWSHOT_L2[-1]):
        np.testing.assert_allclose(primal.scores(queries, reg), dual.scores(queries, reg), rtol=1e-4, atol=1e-5)


def test_fewshot_memory_is_bounded_by_the_features_not_queries_x_classes():
    """3,000 shots of 300 classes, 3,000 queries: an N x N Gram matrix would take 72 MB and the scores of
    every penalty 115 MB; the primal form and chunked scoring stay far below either."""
    import tracemalloc

    rng = np.random.default_rng(0)
    train, labels = rng.normal(size=(3000, 20)).astype(np.float16), np.repeat(np.arange(300), 10)
    queries = rng.normal(size=(3000, 20)).astype(np.float16)
    tracemalloc.start()
    try:
        fit = pm.fewshot_fit(train, labels, 300)
        fit.predictions(queries)
        fit.scores(queries, 1.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert fit.form == "primal" and peak < 20e6, f"peak {peak / 1e6:.1f} MB"


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


def test_a_probe_names_the_classes_of_the_data_it_learns(cli, tiny_run_copy):
    """The probe is fitted on the data's labels: when the run's checkpoint records another class list
    (the data changed since, or a backbone reused), its predictions carry the data's names, not the
    checkpoint's (which would name every class wrongly)."""
    import torch

    from vitcli.core.predictions import load_predictions

    run = tiny_run_copy
    path = run / "checkpoints" / "best.pt"
    state = torch.load(path, weights_only=True)
    state["class_names"] = [f"other_{i}" for i in range(10)]
    torch.save(state, path)
    cli("probe", f"run={run}", "method=knn", "trainer.device=cpu")
    preds = load_predictions(run / "probe" / "knn" / "predictions" / "val.npz")
    assert list(preds.class_names) == [f"class_{i}" for i in range(10)]  # data=synthetic's


def test_feature_cache_key_of_a_batchnorm_model_follows_its_statistics():
    """BatchNorm's 0-d num_batches_tracked is hashed too (it once stopped `vitcli probe` of any CNN)."""
    import timm
    import torch

    from vitcli.tasks.probe_features import weights_hash

    model = timm.create_model("resnet18", layers=[1, 1, 1, 1], channels=[8, 16, 32, 64], stem_width=8)
    before = weights_hash(model)
    model.bn1.running_var.mul_(2.0)  # statistics change the features, so they must change the key
    assert weights_hash(model) != before
    model.bn1.running_var.div_(2.0)
    assert weights_hash(model) == before
    assert torch.equal(model.bn1.num_batches_tracked, torch.tensor(0))


def test_probes_of_fp16_features_standardise_in_float64():
    """The feature cache is fp16: 1,000 features of spread 10 sum to squares past fp16's 65,504, whose
    std was inf (every feature 0, chance accuracy) when the statistics were taken in fp16."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 250)
    x16 = (rng.normal(0, 8, (4, 8))[labels] + rng.normal(0, 10, (1000, 8))).astype(np.float16)
    x64 = x16.astype(np.float64)
    with np.errstate(over="ignore"):
        assert not np.isfinite(x16.std(axis=0)).all()  # the overflow this guards against
    np.testing.assert_array_equal(pm.fewshot_fit(x16, labels, 4).predictions(x16),
                                  pm.fewshot_fit(x64, labels, 4).predictions(x64))
    clf16, prep16, _ = pm.linear_probe(x16[::2], labels[::2], x16[1::2], labels[1::2], cs=(1.0,))
    clf64, prep64, _ = pm.linear_probe(x64[::2], labels[::2], x64[1::2], labels[1::2], cs=(1.0,))
    np.testing.assert_array_equal(clf16.predict(prep16(x16)), clf64.predict(prep64(x64)))
    assert (clf16.predict(prep16(x16)) == labels).mean() > 0.5  # well above chance (0.25)
