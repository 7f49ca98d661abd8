"""Stratified splits are sklearn's, cached between runs; a bad cache file is never used."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from vitcli.data import split_cache
from vitcli.data.arrays import stratified_split


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("VITCLI_CACHE", str(tmp_path / "cache"))  # stratified_split's default cache
    return tmp_path / "cache"


def entry(cache: Path) -> Path:
    files = list((cache / "splits").glob("*.npz"))
    assert len(files) == 1, files
    return files[0]


def label_sets() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [np.repeat(np.arange(10), 30), rng.integers(0, 7, 1000), rng.integers(0, 3, 101).astype(np.int32),
            np.repeat(np.arange(4), [4, 6, 10, 20])]


@pytest.mark.parametrize("labels", label_sets())
@pytest.mark.parametrize("fraction,seed", [(0.1, 0), (0.2, 42), (0.33, 7)])
def test_cached_split_equals_sklearns(cache, labels, fraction, seed):
    want = split_cache.sklearn_split(labels, fraction, seed)
    first = stratified_split(labels, fraction, seed)
    assert entry(cache).is_file()
    second = stratified_split(labels, fraction, seed)  # from the cache
    for got in (first, second):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        assert got[0].dtype == got[1].dtype == np.int64


def test_key_covers_labels_fraction_seed_and_version(tmp_path):
    labels = np.repeat(np.arange(4), 5)
    base = split_cache.split_path(tmp_path, labels, 0.2, 0, "1.0")
    assert base == split_cache.split_path(tmp_path, labels.copy(), 0.2, 0, "1.0")
    others = [split_cache.split_path(tmp_path, labels[::-1], 0.2, 0, "1.0"),
              split_cache.split_path(tmp_path, labels.astype(np.int32), 0.2, 0, "1.0"),
              split_cache.split_path(tmp_path, labels, 0.25, 0, "1.0"),
              split_cache.split_path(tmp_path, labels, 0.2, 1, "1.0"),
              split_cache.split_path(tmp_path, labels, 0.2, 0, "1.1")]
    assert len({base, *others}) == 6


def test_a_warm_cache_imports_no_sklearn(cache):
    code = ("import sys, numpy as np; from vitcli.data.arrays import stratified_split; "
            "tr, va = stratified_split(np.repeat(np.arange(10), 30), 0.1, 0); "
            "print(len(tr), len(va), sorted(m for m in sys.modules if m.startswith('sklearn'))[:3])")
    env = {**os.environ, "VITCLI_CACHE": str(cache)}
    cold = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert cold.stdout.split()[:2] == ["270", "30"] and "sklearn" in cold.stdout  # computed, then cached
    warm = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert warm.stdout.strip() == "270 30 []"


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _pickled_npz() -> bytes:
    """An npz whose member is a pickle (object array): allow_pickle=False must refuse it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        arr = io.BytesIO()
        np.save(arr, np.array([{"x": 1}, None], dtype=object), allow_pickle=True)
        z.writestr("train.npy", arr.getvalue())
        z.writestr("val.npy", pickle.dumps([1, 2]))
    return buf.getvalue()


LABELS = np.repeat(np.arange(5), 8)  # 40 samples, val_fraction 0.2 -> 8 val
GOOD_TRAIN, GOOD_VAL = split_cache.sklearn_split(LABELS, 0.2, 3)
CORRUPT = {
    "garbage": b"\x00garbage, not a zip" * 10,
    "truncated": _npz(train=GOOD_TRAIN, val=GOOD_VAL)[:100],
    "pickle": _pickled_npz(),
    "object-array": _npz(train=np.array(list(GOOD_TRAIN), dtype=object), val=GOOD_VAL),
    "overlap": _npz(train=np.arange(0, 32), val=np.arange(31, 39)),
    "wrong-length": _npz(train=np.arange(0, 30), val=np.arange(30, 40)),
    "too-few": _npz(train=np.arange(0, 30), val=np.arange(30, 38)),
    "unsorted": _npz(train=GOOD_TRAIN[::-1], val=GOOD_VAL),
    "out-of-range": _npz(train=np.arange(1, 33), val=np.arange(33, 41)),
    "floats": _npz(train=GOOD_TRAIN.astype(float), val=GOOD_VAL.astype(float)),
    "2d": _npz(train=GOOD_TRAIN[None], val=GOOD_VAL[None]),
    "extra-member": _npz(train=GOOD_TRAIN, val=GOOD_VAL, other=np.zeros(1)),
}


@pytest.mark.parametrize("name", list(CORRUPT))
def test_a_corrupt_cache_file_is_ignored_and_rewritten(cache, name):
    stratified_split(LABELS, 0.2, 3)
    path = entry(cache)
    path.write_bytes(CORRUPT[name])
    assert split_cache.load_split(path, len(LABELS), 0.2) is None
    train, val = stratified_split(LABELS, 0.2, 3)
    np.testing.assert_array_equal(train, GOOD_TRAIN)
    np.testing.assert_array_equal(val, GOOD_VAL)
    assert split_cache.load_split(path, len(LABELS), 0.2) is not None  # rewritten with the right split


def test_a_valid_cache_file_is_what_is_returned(cache):
    """The cache is really read (not recomputed): a valid but different split on disk is returned."""
    stratified_split(LABELS, 0.2, 3)
    entry(cache).write_bytes(_npz(train=np.arange(8, 40), val=np.arange(0, 8)))
    train, val = stratified_split(LABELS, 0.2, 3)
    np.testing.assert_array_equal(val, np.arange(8))


def test_a_failing_cache_write_still_gives_the_split(cache, monkeypatch):
    """What a read-only cache does to the writer (also under root, whom chmod does not stop)."""
    def refuse(path, write):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(split_cache, "atomic_write", refuse)
    train, val = stratified_split(LABELS, 0.2, 3)
    np.testing.assert_array_equal(train, GOOD_TRAIN)
    np.testing.assert_array_equal(val, GOOD_VAL)
    assert not (cache / "splits").exists()


def test_a_cache_path_that_is_a_file_still_gives_the_split(tmp_path, monkeypatch):
    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv("VITCLI_CACHE", str(tmp_path / "cache"))
    train, val = stratified_split(LABELS, 0.2, 3)
    np.testing.assert_array_equal(val, GOOD_VAL)


def test_uncacheable_arguments_go_to_sklearn_uncached(cache):
    n_val = stratified_split(LABELS, 8, 3)[1]  # an int fraction is a count to sklearn
    assert len(n_val) == 8
    assert not (cache / "splits").exists()


def test_too_few_samples_still_raise_sklearns_value_error(cache):
    with pytest.raises(ValueError):
        stratified_split(np.array([0, 0, 1, 1, 2]), 0.2, 0)
    assert not (cache / "splits").exists() or not any((cache / "splits").iterdir())
