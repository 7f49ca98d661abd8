"""The arithmetic of frozen-feature probes: weighted k-NN, a logistic-regression linear probe
and closed-form few-shot regression. Features in, (N, C) scores out; no model, no files.

- k-NN follows DINO (Caron et al. 2021, eval_knn.py): cosine similarity to every training
  feature, the k nearest vote for their class with weight exp(similarity / 0.07).
- The linear probe is scikit-learn's multinomial LogisticRegression on standardised features,
  its inverse regularisation C chosen by top-1 on the selection split (DINOv2 picks its linear
  heads' hyper-parameters on val the same way).
- Few-shot follows big_vision's fewshot_lsr: standardised features plus a large constant bias
  feature, least squares onto {-1, +1} one-hot targets with an L2 penalty, solved through one
  eigendecomposition of the (N x N) Gram matrix for every penalty at once.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

KNN_TEMPERATURE = 0.07  # DINO's
LINEAR_CS = tuple(10.0 ** e for e in range(-4, 3))
FEWSHOT_L2 = tuple(2.0 ** e for e in range(-10, 21, 2))
_BIAS = 100.0  # big_vision's BIAS_CONSTANT: a bias feature this large is almost unpenalised


def _l2_normalize(x: np.ndarray):
    t = torch.as_tensor(np.asarray(x, np.float32))
    return torch.nn.functional.normalize(t, dim=1)


def knn_scores(train: np.ndarray, train_labels: np.ndarray, query: np.ndarray, num_classes: int, k: int,
               temperature: float = KNN_TEMPERATURE, chunk: int = 1024) -> np.ndarray:
    """(N, C) class votes of the k nearest training features (cosine), weighted by exp(sim / T),
    normalised to sum to one per row.

    >>> train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> knn_scores(train, np.array([0, 0, 1, 1]), np.array([[1.0, 0.05]]), 2, k=2).argmax(1)
    array([0])
    """

    bank, queries = _l2_normalize(train), _l2_normalize(query)
    bank_labels = torch.as_tensor(np.asarray(train_labels, np.int64))
    k = min(k, len(bank))
    out = torch.zeros(len(queries), num_classes)
    for start in range(0, len(queries), chunk):
        sim, idx = (queries[start:start + chunk] @ bank.T).topk(k, dim=1)
        weights = (sim / temperature).exp()
        out[start:start + chunk].scatter_add_(1, bank_labels[idx], weights)
    return (out / out.sum(dim=1, keepdim=True)).numpy()


def votes_to_logits(scores: np.ndarray) -> np.ndarray:
    """Vote shares -> log-probabilities, so softmax of the stored 'logits' gives the shares back."""
    return np.log(np.clip(scores, 1e-12, None)).astype(np.float32)


def _standardize(train: np.ndarray, *others: np.ndarray):
    mean = train.mean(axis=0, keepdims=True)
    std = train.std(axis=0, keepdims=True) + 1e-5
    return [(np.asarray(x, np.float64) - mean) / std for x in (train, *others)]


def linear_probe(train: np.ndarray, train_labels: np.ndarray, select: np.ndarray, select_labels: np.ndarray,
                 cs=LINEAR_CS, max_iter: int = 1000):
    """Fit a logistic regression for every C; keep the one with the best top-1 on the selection split.

    Returns (fitted classifier, the standardising function, {C: selection top-1 in %}).

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 5)); y = (x[:, 0] > 0).astype(int)
    >>> clf, prep, curve = linear_probe(x[:150], y[:150], x[150:], y[150:], cs=(0.1, 1.0))
    >>> bool((clf.predict(prep(x[150:])) == y[150:]).mean() > 0.9)
    True
    """

    mean = train.mean(axis=0, keepdims=True)
    std = train.std(axis=0, keepdims=True) + 1e-5

    def prep(x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, np.float64) - mean) / std

    x_train, x_select = prep(train), prep(select)
    curve: dict[float, float] = {}
    best = None
    with _blas_threads(x_train):
        for c in cs:
            clf = LogisticRegression(C=c, max_iter=max_iter)
            clf.fit(x_train, train_labels)
            curve[c] = 100.0 * float((clf.predict(x_select) == select_labels).mean())
            if best is None or curve[c] > curve[best[0]]:
                best = (c, clf)
    return best[1], prep, curve


def _blas_threads(x: np.ndarray):
    """One BLAS thread for small problems: L-BFGS does hundreds of small matrix products, and
    OpenBLAS threads spinning on a busy machine made them 40x slower (13.7 s vs 0.37 s on
    1437 x 128 digits features, 2 shared cores); large feature sets keep every thread."""


    return threadpool_limits(1, user_api="blas") if x.size < 5_000_000 else nullcontext()


def class_log_proba(clf, x: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, C) log-probabilities of a fitted classifier, with -inf-like values for classes it never saw."""
    out = np.full((len(x), num_classes), -30.0, np.float32)
    out[:, clf.classes_] = clf.predict_log_proba(x)
    return out


def sample_shots(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Indices of `shots` samples of every class, drawn without replacement with a seed."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(labels == c), shots, replace=False) for c in np.unique(labels)]
    return np.sort(np.concatenate(picks))


def fewshot_scores(train: np.ndarray, train_labels: np.ndarray, queries: list[np.ndarray], num_classes: int,
                   l2_regs=FEWSHOT_L2) -> list[np.ndarray]:
    """Least-squares regression onto {-1, +1} targets: for each query set, (R, N, C) scores for
    every L2 penalty in `l2_regs`.

    >>> x = np.array([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9]])
    >>> s, = fewshot_scores(x, np.array([0, 0, 1, 1]), [np.array([[1.0, 0.0]])], 2, l2_regs=(1.0,))
    >>> s[0].argmax(1)
    array([0])
    """
    with _blas_threads(train):
        return _fewshot_scores(train, train_labels, queries, num_classes, l2_regs)


def _fewshot_scores(train, train_labels, queries, num_classes, l2_regs):
    x, *qs = _standardize(train, *queries)
    x = np.pad(x, ((0, 0), (0, 1)), constant_values=_BIAS)
    qs = [np.pad(q, ((0, 0), (0, 1)), constant_values=_BIAS) for q in qs]
    y = 2.0 * np.eye(num_classes)[np.asarray(train_labels)] - 1.0
    # N <= D here: W = X^T (X X^T + l2 I)^-1 Y, with X X^T = V diag(e) V^T computed once
    eigs, vecs = np.linalg.eigh(x @ x.T)
    vty = vecs.T @ y
    out = []
    for q in qs:
        qk = (q @ x.T) @ vecs  # (M, N)
        out.append(np.stack([qk @ (vty / (eigs + reg)[:, None]) for reg in l2_regs]))
    return out
