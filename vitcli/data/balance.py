"""Class balance for skewed training sets (`data.class_balance=none|weighted_loss|sampler`).

- weighted_loss: cross-entropy weighted by inverse class frequency, w_c = N / (K n_c), so a
  sample weighs 1 on average and every class contributes the same total (sklearn's
  `compute_class_weight("balanced")`).
- sampler: each epoch draws N samples with every class equally often (N / K each): a class's
  samples are taken in a fresh seeded permutation, cycled when the class is short (so rare
  samples repeat as evenly as possible, unlike drawing with replacement), and the whole draw
  is shuffled. The draw depends only on (seed, epoch), so exact mid-epoch resume and the DDP
  shards (every world-th index of the same draw) work as for the plain permutation.
"""

from __future__ import annotations

import numpy as np

from vitcli.core.errors import printable


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Samples per class (unknown labels, -1, not counted).

    >>> class_counts(np.array([0, 2, 2, -1]), 3).tolist()
    [1, 0, 2]
    """
    labels = np.asarray(labels)
    return np.bincount(labels[labels >= 0], minlength=num_classes).astype(np.int64)


def inverse_frequency_weights(counts: np.ndarray) -> np.ndarray:
    """w_c = N / (K n_c) over the K classes present; 0 for a class with no sample.

    >>> inverse_frequency_weights(np.array([30, 10, 0])).round(3).tolist()
    [0.667, 2.0, 0.0]
    """
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def balanced_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An epoch of len(labels) indices drawing every labelled class equally often.

    >>> order = balanced_order(np.array([0] * 8 + [1] * 2), np.random.default_rng(0))
    >>> len(order), np.bincount(np.array([0] * 8 + [1] * 2)[order]).tolist()
    (10, [5, 5])
    """
    labels = np.asarray(labels)
    classes = np.unique(labels[labels >= 0])
    n, k = len(labels), len(classes)
    quota = np.full(k, n // k, dtype=np.int64)
    quota[rng.permutation(k)[: n % k]] += 1  # the remainder goes to randomly chosen classes
    parts = []
    for c, want in zip(classes, quota):
        members = np.flatnonzero(labels == c)
        cycles = -(-want // len(members))
        parts.append(np.concatenate([rng.permutation(members) for _ in range(cycles)])[:want])
    return rng.permutation(np.concatenate(parts))


def counts_table(counts: np.ndarray, names: list[str], limit: int = 10) -> str:
    """One log line: the classes with the fewest and the most samples."""
    order = np.argsort(counts, kind="stable")
    def fmt(idx):
        return ", ".join(f"{printable(str(names[i]))} {int(counts[i])}" for i in idx)  # names are data
    if len(counts) <= limit:
        return fmt(range(len(counts)))
    return f"fewest: {fmt(order[: limit // 2])}; most: {fmt(order[::-1][: limit // 2])}"
