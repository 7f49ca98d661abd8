"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 images, 10 classes."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from vitcli.data.arrays import ArraySplit


def load_digits_split() -> tuple[ArraySplit, list[str]]:
    """All 1,797 digits as 8x8 RGB uint8 images (0..16 grey levels scaled to 0..255)."""
    digits = load_digits()
    gray = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # (N, 8, 8)
    images = np.repeat(gray[..., None], 3, axis=-1)
    labels = digits.target.astype(np.int64)
    ids = [f"digits/{i:05d}" for i in range(len(labels))]
    return ArraySplit(images, labels, ids), [str(c) for c in range(10)]
