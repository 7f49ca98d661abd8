"""A cache of stratified train/val splits, so a run whose split was computed before imports no scikit-learn.

scikit-learn's `train_test_split` still computes every split (the reference for "the same split");
loading scikit-learn costs ~0.8 s of a default run's start-up, while a split of the same labels,
fraction and seed is the same each time. Its result is kept as `<cache dir>/splits/<key>.npz`
(two int64 arrays, never a pickle), keyed by the labels' bytes, dtype and shape, the fraction, the
seed and scikit-learn's installed version (read from its metadata: no import). A cached file is
used only when it is a valid split of exactly these labels' size (`valid_split`): anything else
is recomputed and rewritten. A cache that cannot be written is skipped, never an error.
"""

from __future__ import annotations

import hashlib
import json
import math
from importlib import metadata
from pathlib import Path

import numpy as np

from vitcli.core.io import atomic_write, cache_dir

SPLIT_CACHE_VERSION = 1


def sklearn_split(labels: np.ndarray, val_fraction: float, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's stratified split of range(len(labels)), sorted (raises its ValueError on too few samples)."""
    from sklearn.model_selection import train_test_split  # here: loading sklearn takes ~0.8 s

    idx = np.arange(len(labels))
    train_idx, val_idx = train_test_split(idx, test_size=val_fraction, stratify=labels, random_state=seed)
    return np.sort(train_idx), np.sort(val_idx)


def sklearn_version() -> str | None:
    try:
        return metadata.version("scikit-learn")
    except metadata.PackageNotFoundError:
        return None


def cacheable(val_fraction: object, seed: object) -> bool:
    """Only a float fraction in (0, 1) and an integer seed give a split fixed by its arguments
    (an int fraction is a count to sklearn, a None seed is random)."""
    fraction_ok = isinstance(val_fraction, (float, np.floating)) and 0.0 < float(val_fraction) < 1.0
    seed_ok = isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)
    return fraction_ok and seed_ok


def split_path(cache: Path, labels: np.ndarray, val_fraction: float, seed: int, version: str) -> Path:
    labels = np.ascontiguousarray(labels)
    digest = hashlib.sha256(labels.tobytes())
    key = json.dumps([SPLIT_CACHE_VERSION, digest.hexdigest(), labels.dtype.str, list(labels.shape),
                      float(val_fraction).hex(), int(seed), version])
    return cache / "splits" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npz"


def expected_val_size(n: int, val_fraction: float) -> int:
    return math.ceil(float(val_fraction) * n)  # as sklearn's _validate_shuffle_split rounds a float test_size


def valid_split(train: np.ndarray, val: np.ndarray, n: int, val_fraction: float) -> bool:
    """True when (train, val) are sorted, disjoint integer indices covering exactly range(n),
    with as many val samples as sklearn would draw."""
    if train.ndim != 1 or val.ndim != 1 or train.dtype.kind not in "iu" or val.dtype.kind not in "iu":
        return False
    if len(val) != expected_val_size(n, val_fraction) or len(train) + len(val) != n:
        return False
    if np.any(np.diff(train) <= 0) or np.any(np.diff(val) <= 0):  # sorted, no repeats
        return False
    seen = np.zeros(n, dtype=bool)
    for part in (train, val):
        if len(part) and (part[0] < 0 or part[-1] >= n):
            return False
        seen[part] = True
    return bool(seen.all())  # n distinct slots hit by n sorted, in-range indices: disjoint and complete


def load_split(path: Path, n: int, val_fraction: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached split at `path`, or None when missing, unreadable or not a valid split."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if sorted(z.files) != ["train", "val"]:
                return None
            train, val = z["train"], z["val"]
    except Exception:  # hostile bytes: zipfile, numpy's header parser and allow_pickle raise many kinds
        return None
    if not valid_split(train, val, n, val_fraction):
        return None
    return train.astype(np.int64, copy=False), val.astype(np.int64, copy=False)


def save_split(path: Path, train: np.ndarray, val: np.ndarray) -> bool:
    """Write the split atomically; False when the cache dir cannot be written (the run goes on)."""
    try:
        atomic_write(path, lambda f: np.savez(f, train=train.astype(np.int64), val=val.astype(np.int64)))
    except OSError:
        return False
    return True


def cached_stratified_split(labels: np.ndarray, val_fraction: float, seed: int | None,
                            cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's stratified split of `labels` (sorted indices), from the cache when a valid entry exists."""
    version = sklearn_version()
    if version is None or not cacheable(val_fraction, seed):
        return sklearn_split(labels, val_fraction, seed)
    labels = np.asarray(labels)
    try:
        path = split_path(cache if cache is not None else cache_dir(None), labels, val_fraction, int(seed), version)
    except (OSError, RuntimeError):  # no home dir to put the cache in
        return sklearn_split(labels, val_fraction, seed)
    hit = load_split(path, len(labels), val_fraction)
    if hit is not None:
        return hit
    train, val = sklearn_split(labels, val_fraction, seed)
    save_split(path, train, val)
    return train, val
