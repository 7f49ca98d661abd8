"""The digits source reads sklearn's digits file itself (no sklearn import) and gives load_digits' arrays."""

from __future__ import annotations

import gzip
import subprocess
import sys

import numpy as np
import pytest

from vitcli.data.sources import digits as digits_source


def test_digits_arrays_equal_sklearns_load_digits():
    from sklearn.datasets import load_digits

    images, target = digits_source.load_digits_arrays()
    reference = load_digits()
    assert images.dtype == reference.images.dtype and target.dtype == reference.target.dtype
    np.testing.assert_array_equal(images, reference.images)
    np.testing.assert_array_equal(target, reference.target)


def test_digits_file_is_found_without_importing_sklearn():
    path = digits_source.digits_csv_path()
    assert path is not None and path.is_file()
    assert digits_source.read_digits_csv(path) is not None


def _no_direct_read(monkeypatch) -> list[str]:
    """Make load_digits_arrays fall back; returns a list that records each sklearn call."""
    calls: list[str] = []
    import sklearn.datasets

    real = sklearn.datasets.load_digits
    monkeypatch.setattr(sklearn.datasets, "load_digits", lambda: calls.append("load_digits") or real())
    return calls


def test_missing_file_falls_back_to_sklearn(monkeypatch, tmp_path):
    calls = _no_direct_read(monkeypatch)
    monkeypatch.setattr(digits_source, "digits_csv_path", lambda: tmp_path / "gone.csv.gz")
    split, names = digits_source.load_digits_split()
    assert calls == ["load_digits"]
    assert split.images.shape == (1797, 8, 8, 3) and names == [str(c) for c in range(10)]


@pytest.mark.parametrize("content", [b"not gzip at all", gzip.compress(b"1,2,3\n4,5,6\n", mtime=0),
                                     gzip.compress(b"0," * 64 + b"99\n", mtime=0)],
                         ids=["garbage", "wrong-shape", "out-of-range"])
def test_a_file_of_another_shape_or_garbage_falls_back(monkeypatch, tmp_path, content):
    bad = tmp_path / "digits.csv.gz"
    bad.write_bytes(content)
    assert digits_source.read_digits_csv(bad) is None
    calls = _no_direct_read(monkeypatch)
    monkeypatch.setattr(digits_source, "digits_csv_path", lambda: bad)
    images, target = digits_source.load_digits_arrays()
    assert calls == ["load_digits"] and images.shape == (1797, 8, 8)


def test_no_sklearn_installed_location_falls_back(monkeypatch):
    monkeypatch.setattr(digits_source.importlib.util, "find_spec", lambda name: None)
    assert digits_source.digits_csv_path() is None
    calls = _no_direct_read(monkeypatch)
    digits_source.load_digits_arrays()
    assert calls == ["load_digits"]


def test_loading_digits_imports_no_sklearn():
    code = ("import sys; from vitcli.data.sources.digits import load_digits_split; load_digits_split(); "
            "print(sorted(m for m in sys.modules if m.startswith('sklearn')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
