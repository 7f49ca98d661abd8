"""Calibration of a classifier's probabilities: ECE, NLL, reliability bins and temperature scaling.

ECE follows Guo et al. (2017), "On Calibration of Modern Neural Networks": the max-softmax
confidence is binned into equal-width bins over [0, 1] and the gaps |accuracy - confidence|
are averaged, weighted by bin size. Temperature scaling divides the logits by one scalar T
fitted by minimising the NLL on a held-out split; it never changes the argmax. Scored on the
split it was fitted on, the calibrated figures are cross-fitted (`cross_fitted_logits`), so they
stay out-of-sample.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

ECE_BINS = 15


@dataclass
class ReliabilityBins:
    """Per-bin sample count, accuracy and mean confidence (bins with no sample hold NaN)."""

    edges: np.ndarray  # (B + 1,)
    counts: np.ndarray  # (B,)
    accuracy: np.ndarray  # (B,)
    confidence: np.ndarray  # (B,)

    @property
    def ece(self) -> float:
        total = self.counts.sum()
        if total == 0:
            return 0.0
        filled = self.counts > 0
        gaps = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float((gaps * self.counts[filled]).sum() / total)


def reliability_bins(logits: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS,
                     temperature: float = 1.0) -> ReliabilityBins:
    """Bin the top-1 confidence of softmax(logits / T) into `n_bins` equal-width bins.

    >>> bins = reliability_bins(np.array([[2.0, 0.0], [0.0, 3.0]]), np.array([0, 0]))
    >>> int(bins.counts.sum())
    2
    """
    probs = np.exp(log_softmax(np.asarray(logits, np.float64) / temperature, axis=1))
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    correct = pred == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # right-closed bins (lo, hi], the first one also takes 0
    index = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(index, weights=correct, minlength=n_bins) / counts
        confidence = np.bincount(index, weights=conf, minlength=n_bins) / counts
    return ReliabilityBins(edges, counts, accuracy, confidence)


def expected_calibration_error(logits: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS,
                               temperature: float = 1.0) -> float:
    """ECE in [0, 1] of softmax(logits / T) with `n_bins` equal-width confidence bins.

    >>> round(expected_calibration_error(np.array([[10.0, 0.0]] * 4), np.array([0, 0, 1, 1])), 3)
    0.5
    """
    return reliability_bins(logits, labels, n_bins, temperature).ece


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean cross-entropy of softmax(logits / T) against the labels (nats).

    >>> round(negative_log_likelihood(np.zeros((3, 4)), np.array([0, 1, 2])), 4)
    1.3863
    """
    logp = log_softmax(np.asarray(logits, np.float64) / temperature, axis=1)
    return float(-logp[np.arange(len(labels)), np.asarray(labels)].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature T in `bounds` that minimises the NLL of softmax(logits / T).

    >>> rng = np.random.default_rng(0)
    >>> labels = rng.integers(0, 3, 500)
    >>> logits = 8.0 * np.eye(3)[labels] + rng.normal(0, 4, (500, 3))   # over-confident
    >>> fit_temperature(logits, labels) > 1.0
    True
    """
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    result = minimize_scalar(lambda log_t: negative_log_likelihood(logits, labels, float(np.exp(log_t))),
                             bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded",
                             options={"xatol": 1e-5})
    return float(np.exp(result.x))


def id_folds(ids: Sequence[str], folds: int = 2) -> np.ndarray:
    """A fold per sample from a hash of its id: the same halves whatever the row order.

    >>> id_folds(["a", "b", "c"]).tolist() == id_folds(["c", "b", "a"]).tolist()[::-1]
    True
    """
    return np.array([zlib.crc32(str(i).encode()) % folds for i in ids], dtype=np.int64)


def cross_fitted_logits(logits: np.ndarray, labels: np.ndarray, ids: Sequence[str], folds: int = 2) -> np.ndarray:
    """logits / T, each sample's T fitted on the other folds only: calibrated scores that stay
    out-of-sample on the split T is fitted on (a fold alone in its split keeps T = 1).

    >>> rng = np.random.default_rng(0)
    >>> labels = rng.integers(0, 3, 400)
    >>> logits = 8.0 * np.eye(3)[labels] + rng.normal(0, 4, (400, 3))
    >>> out = cross_fitted_logits(logits, labels, [str(i) for i in range(400)])
    >>> bool(negative_log_likelihood(out, labels) < negative_log_likelihood(logits, labels))
    True
    """
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    fold = id_folds(ids, folds)
    out = logits.copy()
    for k in range(folds):
        inside = fold == k
        if inside.any() and not inside.all():
            out[inside] = logits[inside] / fit_temperature(logits[~inside], labels[~inside])
    return out
