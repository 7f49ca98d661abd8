"""Ensembling: the numpy core on synthetic prediction sets, and `vitcli ensemble` on saved predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vitcli.core.errors import UserError
from vitcli.core.predictions import Predictions, load_predictions, topk_accuracy
from vitcli.tasks import ensemble_methods as E


def one_hot_logits(pred: np.ndarray, classes: int, margin: float = 4.0) -> np.ndarray:
    return (margin * np.eye(classes, dtype=np.float32)[pred]).astype(np.float32)


def members_wrong_on_disjoint_thirds(n: int = 300, classes: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    stack = []
    for m in range(3):
        pred = y.copy()
        bad = np.arange(n) % 3 == m
        pred[bad] = (y[bad] + 1 + m) % classes
        stack.append(one_hot_logits(pred, classes))
    return np.stack(stack), y


def test_vote_corrects_members_errors():
    stack, y = members_wrong_on_disjoint_thirds()
    for member in stack:
        assert topk_accuracy(member, y) == pytest.approx(100 * 2 / 3)
    for method in ("vote", "mean_prob", "mean_logit"):
        assert topk_accuracy(E.combine(method, stack), y) == 100.0, method


def test_vote_ties_are_broken_by_summed_probability():
    # two members disagree: the more confident one decides; a third class is never ranked above them
    a = np.array([[5.0, 0.0, 1.0, 0, 0, 0]], np.float32)
    b = np.array([[0.0, 2.0, 1.9, 0, 0, 0]], np.float32)
    out = E.combine("vote", np.stack([a, b]))
    assert list(np.argsort(-out[0])[:2]) == [0, 1]
    out = E.combine("vote", np.stack([b, a]))
    assert list(np.argsort(-out[0])[:2]) == [0, 1]


def test_probability_never_overturns_a_weighted_vote():
    rng = np.random.default_rng(1)
    stack = rng.normal(size=(7, 500, 12)).astype(np.float32) * 3
    w = rng.uniform(0.1, 1.0, 7)
    out = E.combine("weighted_vote", stack, w)
    votes = np.zeros((500, 12))
    for m in range(7):
        votes[np.arange(500), stack[m].argmax(1)] += w[m]
    winner = out.argmax(1)
    assert np.allclose(votes[np.arange(500), winner], votes.max(1))


def test_weighted_vote_beats_plain_vote_when_weak_members_agree_on_errors():
    rng = np.random.default_rng(2)
    n, c = 400, 10
    y = rng.integers(0, c, n)
    wrong = (y + 1) % c
    strong = [one_hot_logits(y, c), one_hot_logits(y, c)]
    bad = np.arange(n) % 2 == 0  # the three weak members share their mistakes on half the samples
    weak = [one_hot_logits(np.where(bad, wrong, y), c, margin=1.0) for _ in range(3)]
    stack = np.stack(strong + weak)
    accs = np.array([topk_accuracy(m, y) / 100 for m in stack])
    plain = topk_accuracy(E.combine("vote", stack), y)
    weighted = topk_accuracy(E.combine("weighted_vote", stack, accs ** 4), y)
    assert plain == pytest.approx(50.0)
    assert weighted == 100.0


def test_greedy_selects_the_strong_members():
    rng = np.random.default_rng(3)
    n, c = 500, 10
    y = rng.integers(0, c, n)
    strong = [rng.normal(size=(n, c)).astype(np.float32) + 3.0 * np.eye(c, dtype=np.float32)[y] for _ in range(2)]
    weak = [rng.normal(size=(n, c)).astype(np.float32) for _ in range(4)]
    stack = np.stack(weak[:2] + strong + weak[2:])
    res = E.greedy_select(stack, y, steps=10)  # metric=nll
    assert res.counts[[2, 3]].sum() == res.counts.sum() > 0
    assert res.counts[2] > 0 and res.counts[3] > 0  # the two strong ones complement each other
    assert 1 <= res.best_round <= 10 and len(res.history) == 10
    ens = topk_accuracy(E.combine("greedy", stack, res.counts), y)
    assert ens >= max(topk_accuracy(m, y) for m in stack)
    by_top1 = E.greedy_select(stack, y, steps=10, metric="top1")
    assert by_top1.counts[[2, 3]].sum() >= 0.6 * by_top1.counts.sum()  # noisy members may sneak in, strong lead
    assert by_top1.history[0][0] in (2, 3)


def test_outputs_are_log_probabilities_and_temperature_matters():
    rng = np.random.default_rng(4)
    stack = rng.normal(size=(3, 50, 7)).astype(np.float32)
    for method in ("vote", "weighted_vote", "mean_prob", "mean_logit", "greedy"):
        out = E.combine(method, stack, [1, 2, 3])
        assert out.dtype == np.float32 and out.shape == (50, 7)
        assert np.allclose(np.exp(out).sum(1), 1.0, atol=1e-4), method
    assert not np.allclose(E.combine("mean_prob", stack), E.combine("mean_prob", stack, temperatures=[0.2, 1, 5]))
    with pytest.raises(UserError, match="temperatures"):
        E.combine("mean_prob", stack, temperatures=[1.0])
    with pytest.raises(UserError, match="weights"):
        E.combine("mean_prob", stack, weights=[1, -1, 1])


def test_member_checks():
    with pytest.raises(UserError, match="NaN"):
        E.check_finite(np.array([[0.0, np.nan]]), "runs/x/predictions/val.npz")
    with pytest.raises(UserError, match="3, .* has 4"):
        E.check_classes(["a", "b", "c"], ["a", "b", "c", "d"], "A", "B")
    with pytest.raises(UserError, match="class 1"):
        E.check_classes(["a", "b"], ["a", "x"], "A", "B")
    assert E.align(["a", "b"], ["a", "b"], "A", "B") is None
    assert list(E.align(["a", "b", "c"], ["c", "a", "b"], "A", "B")) == [1, 2, 0]
    with pytest.raises(UserError, match="different samples"):
        E.align(["a", "b"], ["a", "z"], "A", "B")


# ---- the command, on fake run dirs that already hold predictions --------------------------

@pytest.fixture(scope="module")
def predicted_run(fake_run):
    """`predicted_run(path, logits_by_split, labels_by_split, names=None, ids_fn=None)`: a fake run
    holding predictions/<split>.npz (MiniPlaces-style ids) and nothing else."""

    def make(path, logits_by_split, labels_by_split, names=None, ids_fn=None):
        preds = {}
        for split, logits in logits_by_split.items():
            n, c = logits.shape
            ids = ids_fn(split, n) if ids_fn else [f"{split}/{i:08d}.jpg" for i in range(1, n + 1)]
            preds[split] = Predictions(logits, ids, names or [f"c{i}" for i in range(c)], labels_by_split.get(split),
                                       {"split": split, "data": "miniplaces", "run": str(path)})
        return fake_run(path, predictions=preds)

    return make


@pytest.fixture()
def three_runs(predicted_run, tmp_path):
    stack, y = members_wrong_on_disjoint_thirds(n=60, classes=8)
    test_stack, _ = members_wrong_on_disjoint_thirds(n=30, classes=8, seed=1)
    sweep = tmp_path / "multirun" / "stamp"
    runs = [predicted_run(sweep / str(m), {"val": stack[m], "test": test_stack[m]}, {"val": y}) for m in range(3)]
    return tmp_path, runs, y


def test_ensemble_command_writes_report_predictions_and_submissions(cli, three_runs):
    root, runs, y = three_runs
    out = root / "ens"
    proc = cli("ensemble", f"runs=[{','.join(map(str, runs))}]", "method=vote", f"out={out}")
    assert "ensemble" in proc.stdout and "100.00" in proc.stdout
    record = json.loads((out / "ensemble.json").read_text())
    assert record["split"] == "test" and record["weights_from"] == "val"
    assert record["ensemble_scores"]["val"]["top1"] == 100.0
    preds = load_predictions(out / "predictions" / "test.npz")
    assert len(preds) == 30 and preds.source["ensemble"] == "vote"
    assert (out / "submission" / "test_top5.txt").is_file() and (out / "submission" / "test_kaggle.csv").is_file()
    assert "member" in (out / "report.txt").read_text()


def test_ensemble_accepts_a_multirun_dir_and_a_glob(compose, three_runs):
    from vitcli.commands.ensemble import run_ensemble

    root, runs, _ = three_runs
    out = root / "ens_multi"
    run_ensemble(compose("ensemble", [f"runs={root / 'multirun' / 'stamp'}", "method=greedy", "greedy_steps=5",
                                      f"out={out}"]))
    record = json.loads((out / "ensemble.json").read_text())
    assert record["members"] == [str(r) for r in runs]
    assert record["greedy_best_round"] >= 1
    out = root / "ens_glob"
    run_ensemble(compose("ensemble", [f"runs={root}/multirun/stamp/*", "method=weighted_vote", "split=val",
                                      f"out={out}"]))
    assert json.loads((out / "ensemble.json").read_text())["members"] == [str(r) for r in runs]


@pytest.mark.parametrize("case,needle", [
    ("one", "at least two members"),
    ("nan", "NaN or infinite"),
    ("classes", "disagree on the classes"),
    ("names", "disagree on class 0"),
    ("ids", "different samples"),
    ("missing", "vitcli predict run="),
])
def test_ensemble_errors_are_one_line(predicted_run, cli, compose, tmp_path, capsys, case, needle):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 6, 20)
    good = rng.normal(size=(20, 6)).astype(np.float32)
    a = predicted_run(tmp_path / "a", {"val": good}, {"val": y})
    b_logits, names, ids_fn = good.copy(), None, None
    if case == "nan":
        b_logits[3, 2] = np.nan
    if case == "classes":
        b_logits = rng.normal(size=(20, 7)).astype(np.float32)
    if case == "names":
        names = [f"k{i}" for i in range(6)]
    if case == "ids":
        ids_fn = lambda split, n: [f"{split}/{i:08d}.jpg" for i in range(2, n + 2)]  # noqa: E731
    b = predicted_run(tmp_path / "b", {} if case == "missing" else {"val": b_logits}, {"val": y}, names, ids_fn)
    runs = f"runs=[{a}]" if case == "one" else f"runs=[{a},{b}]"
    args = (runs, "split=val", "predict_missing=false", f"out={tmp_path / 'out'}")
    if case == "nan":  # once through the real CLI: exit 2, one line, no traceback
        proc = cli("ensemble", *args, check=False)
        returncode, err = proc.returncode, proc.stderr
    else:
        from vitcli.commands.ensemble import run_ensemble

        with pytest.raises(SystemExit) as exit_info:
            run_ensemble(compose("ensemble", list(args)))
        returncode, err = exit_info.value.code, capsys.readouterr().err
    assert returncode == 2, err
    assert needle in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# ---- cached predictions must come from the weights and TTA asked for ----------------------

def test_predictions_of_other_weights_or_tta_are_predicted_again_or_refused(tiny_run_copy, cli, tmp_path):
    import shutil

    from vitcli.models.run_model import checkpoint_key

    a = tiny_run_copy
    b = shutil.copytree(a, tmp_path / "b")
    for run in (a, b):
        cli("predict", f"run={run}", "split=val", "checkpoint=best")
    cached = load_predictions(a / "predictions" / "val.npz")
    assert cached.source["checkpoint_key"] == checkpoint_key(a, "best") and cached.source["tta"] == "none"
    assert cached.source["data_identity"]["count"] == 32
    base = (f"runs=[{a},{b}]", "split=val", "method=mean_prob")
    for asked, needle in ((["checkpoint=last"], "was made by other weights (best: sha256:"),
                          (["eval.tta=flip"], "was made with eval.tta=none, not eval.tta=flip")):
        proc = cli("ensemble", *base, *asked, "predict_missing=false", f"out={tmp_path / 'refused'}", check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert needle in proc.stderr and f"vitcli predict run={a} split=val" in proc.stderr
    assert not (tmp_path / "refused").exists()
    proc = cli("ensemble", *base, "eval.tta=flip", f"out={tmp_path / 'flip'}")
    assert "was made with eval.tta=none, not eval.tta=flip: predicting it again" in proc.stdout
    again = load_predictions(a / "predictions" / "val.npz")
    assert again.source["tta"] == "flip" and not np.allclose(again.logits, cached.logits)
    cli("ensemble", *base, "eval.tta=flip", f"out={tmp_path / 'cached'}")  # now they match: read, not predicted
    assert np.array_equal(load_predictions(a / "predictions" / "val.npz").logits, again.logits)
    legacy = Predictions(cached.logits, cached.ids, cached.class_names, cached.labels, {"checkpoint": "best"})
    legacy.save(a / "predictions" / "val.npz")
    proc = cli("ensemble", *base, "predict_missing=false", f"out={tmp_path / 'legacy'}", check=False)
    assert proc.returncode == 2 and "records no checkpoint content key (written by an older vitcli)" in proc.stderr


def test_members_that_label_a_split_differently_are_refused(predicted_run, tmp_path, cli):
    rng = np.random.default_rng(4)
    y = rng.integers(0, 6, 20)
    logits = rng.normal(size=(20, 6)).astype(np.float32)
    a = predicted_run(tmp_path / "a", {"val": logits}, {"val": y})
    b = predicted_run(tmp_path / "b", {"val": logits}, {"val": (y + 1) % 6})
    proc = cli("ensemble", f"runs=[{a},{b}]", "split=val", f"out={tmp_path / 'out'}", check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "label val differently (sample 'val/00000001.jpg'" in proc.stderr
