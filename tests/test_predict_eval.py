"""`vitcli eval` reports, `vitcli predict` files and their agreement, on copies of a trained tiny run."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from test_submission import official_score

from vitcli.core.predictions import load_predictions


def cmd(compose, name: str, *overrides: str):
    """Run a command's function in-process on a composed config (the CLI costs seconds of imports)."""
    from vitcli.commands import ensemble, evaluate, predict

    fn = {"eval": evaluate.run_eval, "predict": predict.run_predict, "ensemble": ensemble.run_ensemble}[name]
    return fn(compose(name, list(overrides)))


@pytest.fixture()
def run(tiny_run_copy):
    """These tests write into the run: a private copy of the shared tiny run."""
    return tiny_run_copy


def snapshot(path):
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in path.rglob("*") if p.is_file()}


def test_val_submission_scored_like_the_official_scorer_matches_eval(compose, cli, run):
    cli("predict", f"run={run}", "split=val", "submission=always")
    preds = load_predictions(run / "predictions" / "val.npz")
    assert preds.logits.dtype == np.float32 and preds.logits.shape == (32, 10)
    assert preds.labels is not None and len(preds.ids) == 32 and preds.class_names[0] == "class_0"
    assert preds.source["checkpoint"] == "best" and preds.source["tta"] == "none"
    assert preds.source["run"] == str(run.resolve()) and preds.source["split"] == "val"
    cmd(compose, "eval", f"run={run}")
    result = json.loads((run / "eval" / "val_best.json").read_text())
    errors = official_score((run / "submission" / "val_top5.txt").read_text(),
                            dict(zip(preds.ids, preds.labels.tolist())))
    assert 100 * (1 - errors[0]) == pytest.approx(result["top1"], abs=1e-9)
    assert 100 * (1 - errors[4]) == pytest.approx(result["top5"], abs=1e-9)
    assert not (run / "submission" / "val_kaggle.csv").exists()  # synthetic ids are not 8-digit file names


def test_predict_logits_equal_in_process_eval(compose, run):
    from vitcli.engine.inference import run_split

    cmd(compose, "predict", f"run={run}")  # split=null: synthetic data has no test split, so val
    preds = load_predictions(run / "predictions" / "val.npz")
    assert not (run / "submission").exists()  # submission=auto: not MiniPlaces
    result, again = run_split(run, "val", device="cpu")
    np.testing.assert_allclose(preds.logits, again.logits, rtol=1e-5, atol=1e-5)
    assert result["top1"] == json.loads((run / "summary.json").read_text())["best"]["val_top1"]


def test_eval_writes_reports_and_touches_nothing_else(compose, run, capsys):
    before = snapshot(run)
    cmd(compose, "eval", f"run={run}", "worst=3")
    out = capsys.readouterr().out
    assert "worst classes" in out and out.count("class_") >= 3
    after = snapshot(run)
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) == {"eval/val_best.json", "eval/val_best_per_class.csv",
                                        "eval/val_best_confusion.csv", "plots/confusion_val_best.png",
                                        "plots/errors_val_best.png", "plots/reliability_val_best.png"}
    rows = (run / "eval" / "val_best_confusion.csv").read_text().splitlines()
    assert len(rows) == 11 and rows[0].startswith("true\\pred,class_0")
    cm = np.array([[int(v) for v in r.split(",")[1:]] for r in rows[1:]])
    result = json.loads((run / "eval" / "val_best.json").read_text())
    assert cm.sum() == result["samples"] == 32
    assert 100 * np.trace(cm) / cm.sum() == pytest.approx(result["top1"])
    per_class = result["per_class_accuracy"]
    assert len(per_class) == 10 and result["mean_class_accuracy"] == pytest.approx(np.mean(list(per_class.values())))
    assert (run / "plots" / "confusion_val_best.png").read_bytes()[:4] == b"\x89PNG"
    assert (run / "plots" / "errors_val_best.png").read_bytes()[:4] == b"\x89PNG"
    # precision / recall / F1 and balanced accuracy agree with the confusion matrix
    present = cm.sum(axis=1) > 0
    recall = np.diag(cm)[present] / cm.sum(axis=1)[present]
    assert result["balanced_accuracy"] == pytest.approx(100 * recall.mean())
    for c in np.flatnonzero(cm.sum(axis=0)):
        stats = result["per_class"][f"class_{c}"]
        assert stats["precision"] == pytest.approx(cm[c, c] / cm[:, c].sum())
        assert stats["support"] == cm[c].sum()
    header = (run / "eval" / "val_best_per_class.csv").read_text().splitlines()[0].split(",")
    assert {"precision", "recall", "f1"} <= set(header)


def test_confident_mistakes_and_confused_pairs():
    from vitcli.viz.plots import confident_mistakes, confused_pairs

    logits = np.array([[5.0, 0, 0], [0, 1.0, 0], [0, 0, 9.0], [0, 3.0, 0], [2.0, 0, 0]])
    labels = np.array([1, 1, 0, 0, -1])  # 0: wrong (confident), 1: right, 2: wrong (most), 3: wrong, 4: unknown
    assert confident_mistakes(logits, labels, 2).tolist() == [2, 0]
    cm = np.array([[5, 0, 3], [1, 4, 0], [0, 2, 6]])
    assert confused_pairs(cm, 5) == [(0, 2, 3), (2, 1, 2), (1, 0, 1)]


def test_tta_views_and_probabilities():
    from vitcli.engine.evaluate import tta_views

    x = torch.randn(2, 3, 16, 16)
    assert [len(tta_views(x, t)) for t in ("none", "flip", "multicrop")] == [1, 2, 7]
    assert all(v.shape == x.shape for v in tta_views(x, "multicrop"))
    assert torch.equal(tta_views(x, "flip")[1], x.flip(-1))


@pytest.mark.parametrize("tta", ["flip", "multicrop"])
def test_eval_with_tta(compose, run, tta):
    from vitcli.engine.inference import run_split

    result, preds = run_split(run, "val", device="cpu", tta=tta)
    assert result["samples"] == 32 and result["tta"] == tta
    np.testing.assert_allclose(np.exp(preds.logits).sum(1), 1.0, atol=1e-4)  # log of averaged probabilities
    if tta == "flip":  # the command path once; multicrop only differs in the views above
        cmd(compose, "eval", f"run={run}", f"eval.tta={tta}")
        assert json.loads((run / "eval" / f"val_best_{tta}.json").read_text())["tta"] == tta


def test_checkpoint_ema(compose, cli, run):
    proc = cli("eval", f"run={run}", "checkpoint=ema", check=False)
    assert proc.returncode == 2 and "no EMA weights" in proc.stderr and "Traceback" not in proc.stderr
    state = torch.load(run / "checkpoints/best.pt", weights_only=True)
    state["model_ema"] = {k: v * 0.5 if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, run / "checkpoints/best.pt")
    cmd(compose, "predict", f"run={run}", "split=val", "checkpoint=ema")
    ema = load_predictions(run / "predictions" / "val.npz")
    assert ema.source["checkpoint"] == "ema"
    cmd(compose, "predict", f"run={run}", "split=val", "checkpoint=best")
    assert not np.allclose(ema.logits, load_predictions(run / "predictions" / "val.npz").logits)


def test_bad_tta_fails_at_compose_time_with_the_valid_choices(cli, run):
    proc = cli("eval", f"run={run}", "eval.tta=tenfold", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "tenfold" in proc.stderr and "none, flip, multicrop" in proc.stderr


def test_ensemble_predicts_missing_members_on_the_fly(compose, run, tmp_path):
    other = shutil.copytree(run, tmp_path / "other")
    out = tmp_path / "ens"
    cmd(compose, "ensemble", f"runs=[{run},{other}]", "method=mean_prob", f"out={out}")
    member = load_predictions(run / "predictions" / "val.npz")  # written on the fly
    assert (other / "predictions" / "val.npz").is_file()
    record = json.loads((out / "ensemble.json").read_text())
    assert record["split"] == "val"
    top1 = json.loads((run / "summary.json").read_text())["best"]["val_top1"]
    assert record["ensemble_scores"]["val"]["top1"] == pytest.approx(top1)  # two identical members
    np.testing.assert_allclose(np.exp(load_predictions(out / "predictions" / "val.npz").logits),
                               torch.softmax(torch.from_numpy(member.logits), 1).numpy(), atol=1e-5)


def test_miniplaces_run_writes_test_and_val_submissions(compose, cli, tmp_path):
    pytest.importorskip("vitcli.data.sources.miniplaces")
    from jpeg_trees import make_miniplaces

    tree = make_miniplaces(tmp_path / "tree", classes=6, per_class=4, val=2, test=5, size=16)
    run = tmp_path / "mp"
    cli("train", "model=vit_pico", "model.patch_size=4", "data=miniplaces", f"data.root={tmp_path / 'tree'}",
           "data.img_size=16", "data.batch_size=8", "data.num_workers=0", "trainer.epochs=1",
           "trainer.progress=plain", f"hydra.run.dir={run}")
    cmd(compose, "predict", f"run={run}")  # split=null: MiniPlaces has a test split
    lines = (run / "submission" / "test_top5.txt").read_text().splitlines()
    assert [line.split(" ")[0] for line in lines] == tree["test"]
    assert (run / "submission" / "test_kaggle.csv").read_text().splitlines()[1].startswith("00000001,")
    assert load_predictions(run / "predictions" / "test.npz").labels is None  # test labels are not public
    with pytest.raises(SystemExit, match="2"):
        cmd(compose, "eval", f"run={run}", "split=test")  # "has no labels ... use vitcli predict"
    cmd(compose, "predict", f"run={run}", "split=val")
    result = cmd(compose, "eval", f"run={run}", "save=false")
    errors = official_score((run / "submission" / "val_top5.txt").read_text(), dict(zip(tree["val"], tree["val_labels"])))
    assert 100 * (1 - errors[0]) == pytest.approx(result["top1"])
    assert 100 * (1 - errors[4]) == pytest.approx(result["top5"])


@pytest.mark.parametrize("name", ["eval", "predict", "ensemble"])
def test_missing_run_argument_is_a_user_error(compose, name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cmd(compose, name)
    assert exit_info.value.code == 2 and "is missing" in capsys.readouterr().err
