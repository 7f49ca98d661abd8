"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 images, 10 classes.

The images are read from the very file `sklearn.datasets.load_digits` parses (digits.csv.gz
inside the installed scikit-learn), located without importing scikit-learn: that import costs
~0.8 s of a default run's start-up. When the file is missing or not the expected table (a
future scikit-learn may move it), load_digits itself is called.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from vitcli.data.arrays import ArraySplit

DIGITS_SHAPE = (1797, 65)  # 64 grey levels (0..16) then the class (0..9) per row


def digits_csv_path() -> Path | None:
    """sklearn/datasets/data/digits.csv.gz of the installed scikit-learn (find_spec runs none of its code)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"


def read_digits_csv(path: Path | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(images (N, 8, 8) float64, target (N,) int) parsed as load_digits does, or None when the file
    is missing, unreadable or not the expected table."""
    if path is None:
        return None
    try:
        with gzip.open(path, mode="rt", encoding="utf-8") as f:
            data = np.loadtxt(f, delimiter=",")  # load_gzip_compressed_csv_data's reading, float64
    except (OSError, EOFError, ValueError, UnicodeDecodeError):
        return None
    if data.shape != DIGITS_SHAPE or not np.all((data >= 0) & (data <= 16)):
        return None
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int, copy=False)


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """load_digits()'s (images, target), from its file directly when it is there as expected."""
    found = read_digits_csv(digits_csv_path())
    if found is not None:
        return found
    from sklearn.datasets import load_digits  # the file moved or changed: let sklearn read it

    digits = load_digits()
    return digits.images, digits.target


def load_digits_split() -> tuple[ArraySplit, list[str]]:
    """All 1,797 digits as 8x8 RGB uint8 images (0..16 grey levels scaled to 0..255)."""
    images, target = load_digits_arrays()
    gray = np.round(images * (255.0 / 16.0)).astype(np.uint8)  # (N, 8, 8)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    labels = target.astype(np.int64)
    ids = [f"digits/{i:05d}" for i in range(len(labels))]
    return ArraySplit(rgb, labels, ids), [str(c) for c in range(10)]
