"""MiniPlaces submission files: devkit top-5 format, course Kaggle CSV, and an official-style scorer."""

from __future__ import annotations

import re

import numpy as np
import pytest

from vitcli.core.errors import UserError
from vitcli.tasks import submission as sub


def official_score(submission: str, ground_truth: dict[str, int]) -> list[float]:
    """Re-implementation of the development kit's scorer: top-k error for k = 1..5.

    Lines are matched by file name (order free); a count mismatch or a missing file fails.
    """
    preds: dict[str, list[int]] = {}
    lines = submission.splitlines()
    if len(lines) != len(ground_truth):
        raise ValueError(f"{len(lines)} predictions for {len(ground_truth)} images")
    for line in lines:
        name, *labels = line.split(" ")
        preds[name] = [int(v) for v in labels]
    errors = []
    for k in range(1, 6):
        wrong = 0
        for name, label in ground_truth.items():
            if name not in preds:
                raise ValueError(f"missing prediction for {name}")
            wrong += label not in preds[name][:k]
        errors.append(wrong / len(ground_truth))
    return errors


def miniplaces_set(split: str = "test", n: int = 40, classes: int = 100, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = [f"{split}/{i:08d}.jpg" for i in rng.permutation(np.arange(1, n + 1))]  # deliberately unsorted
    logits = rng.normal(size=(n, classes)).astype(np.float32)
    labels = rng.integers(0, classes, n)
    return ids, logits, labels


def test_top5_file_is_devkit_format(tmp_path):
    ids, logits, _ = miniplaces_set()
    path = sub.write_top5(tmp_path / "test_top5.txt", ids, logits)
    raw = path.read_bytes()
    assert b"\r" not in raw and raw.endswith(b"\n") and not raw.endswith(b"\n\n")
    lines = raw.decode().splitlines()
    assert len(lines) == len(ids)
    names = [line.split(" ")[0] for line in lines]
    assert names == sorted(ids)  # sorted by file name
    assert lines[0].startswith("test/00000001.jpg ")
    row = {i: r for i, r in zip(ids, logits)}
    for line in lines:
        assert re.fullmatch(r"test/\d{8}\.jpg( \d{1,2}){5}", line), line  # single spaces, 5 labels
        name, *labels = line.split(" ")
        labels = [int(v) for v in labels]
        assert len(set(labels)) == 5
        scores = row[name][labels]
        assert (np.diff(scores) <= 0).all()  # descending confidence
        assert labels == list(np.argsort(-row[name])[:5])


def test_kaggle_csv_format(tmp_path):
    ids, logits, _ = miniplaces_set()
    path = sub.write_kaggle(tmp_path / "test_kaggle.csv", ids, logits)
    raw = path.read_bytes()
    assert b"\r" not in raw
    lines = raw.decode().splitlines()
    assert lines[0] == "Id,Category"
    assert len(lines) == len(ids) + 1
    row = {i: r for i, r in zip(ids, logits)}
    for line, expected_id in zip(lines[1:], sorted(ids)):
        short, label = line.split(",")
        assert re.fullmatch(r"\d{8}", short)
        assert expected_id == f"test/{short}.jpg"
        assert int(label) == int(np.argmax(row[expected_id]))


def test_official_scorer_agrees_with_topk_accuracy(tmp_path):
    from vitcli.core.predictions import topk_accuracy

    ids, logits, labels = miniplaces_set("val", n=200, classes=20, seed=3)
    logits[:, :] += 3.0 * np.eye(20)[labels] * (np.arange(200) % 2)[:, None]  # half of them learnable
    path = sub.write_top5(tmp_path / "val_top5.txt", ids, logits)
    errors = official_score(path.read_text(), dict(zip(ids, labels.tolist())))
    assert errors[0] == pytest.approx(1 - topk_accuracy(logits, labels, 1) / 100)
    assert errors[4] == pytest.approx(1 - topk_accuracy(logits, labels, 5) / 100)
    assert errors == sorted(errors, reverse=True)


def test_write_submissions_writes_both_files_for_miniplaces(tmp_path):
    ids, logits, _ = miniplaces_set()
    written = sub.write_submissions(tmp_path, "test", ids, logits)
    assert [p.name for p in written] == ["test_top5.txt", "test_kaggle.csv"]
    assert all(p.parent == tmp_path / "submission" for p in written)


def test_non_miniplaces_ids_get_no_kaggle_csv(tmp_path):
    ids = [f"synthetic/{i:06d}" for i in range(10)]
    written = sub.write_submissions(tmp_path, "val", ids, np.random.default_rng(0).normal(size=(10, 6)))
    assert [p.name for p in written] == ["val_top5.txt"]
    # minival ids repeat file names across classes: no Kaggle ids for them
    assert sub.kaggle_ids(["train/a/abbey/00000001.jpg", "train/b/bakery/shop/00000001.jpg"]) is None


def test_miniplaces_detection_and_modes():
    assert sub.looks_like_miniplaces(["test/00000001.jpg", "val/00000002.jpg", "train/b/bakery/shop/00000003.jpg"])
    assert not sub.looks_like_miniplaces(["synthetic/000001"])
    assert not sub.looks_like_miniplaces([])
    assert sub.should_write("auto", "miniplaces", ["x"])
    assert sub.should_write("auto", "synthetic", ["test/00000001.jpg"])
    assert not sub.should_write("auto", "synthetic", ["synthetic/000001"])
    assert sub.should_write("always", "digits", ["digits/00001"])
    assert not sub.should_write("never", "miniplaces", ["test/00000001.jpg"])


def test_fewer_than_five_classes_or_repeated_ids_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="at least 5 classes"):
        sub.write_top5(tmp_path / "x.txt", ["a", "b"], np.zeros((2, 4)))
    with pytest.raises(UserError, match="repeat"):
        sub.write_top5(tmp_path / "x.txt", ["a", "a"], np.zeros((2, 6)))
