"""The arithmetic of frozen-feature probes: weighted k-NN, a logistic-regression linear probe
and closed-form few-shot regression. Features in, (N, C) scores out; no model, no files.

- k-NN follows DINO (Caron et al. 2021, eval_knn.py): cosine similarity to every training
  feature, the k nearest vote for their class with weight exp(similarity / 0.07).
- The linear probe is scikit-learn's multinomial LogisticRegression on standardised features,
  its inverse regularisation C chosen by top-1 on the selection split (DINOv2 picks its linear
  heads' hyper-parameters on val the same way).
- Few-shot follows big_vision's fewshot_lsr: standardised features plus a large constant bias
  feature, least squares onto {-1, +1} one-hot targets with an L2 penalty, solved through one
  eigendecomposition for every penalty at once: of the (D x D) covariance X^T X when there are at
  least as many shots as feature dimensions (1,000 classes x 25 shots of 768-d features: 769 x 769
  rather than 25,000 x 25,000), else of the (N x N) Gram matrix X X^T. Both give the same weights,
  (X^T X + l2 I)^-1 X^T Y = X^T (X X^T + l2 I)^-1 Y. Queries are scored in chunks, so memory stays
  bounded by the features, never by queries x classes x penalties.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

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

    # float64 statistics: the feature cache is fp16, whose sums of squares overflow to inf (std inf, features 0)
    mean = np.asarray(train, np.float64).mean(axis=0, keepdims=True)
    std = np.asarray(train, np.float64).std(axis=0, keepdims=True) + 1e-5

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


@dataclass
class FewshotFit:
    """A few-shot least-squares fit for every L2 penalty at once: a query q (standardised, bias
    appended) scores (q @ proj) / (eigs + l2) @ coef, with proj (D+1, K), eigs (K,), coef (K, C)."""

    mean: np.ndarray
    std: np.ndarray
    proj: np.ndarray
    eigs: np.ndarray
    coef: np.ndarray
    form: str  # primal (eigenvectors of X^T X) | dual (of X X^T)

    def _projected(self, queries: np.ndarray, chunk: int):
        for start in range(0, len(queries), chunk):
            q = (np.asarray(queries[start:start + chunk], np.float64) - self.mean) / self.std
            yield start, np.pad(q, ((0, 0), (0, 1)), constant_values=_BIAS) @ self.proj

    def predictions(self, queries: np.ndarray, l2_regs=FEWSHOT_L2, chunk: int = 2048) -> np.ndarray:
        """(R, M) predicted class of every query for every L2 penalty."""
        out = np.empty((len(l2_regs), len(queries)), np.int64)
        with _blas_threads(queries):
            for start, z in self._projected(queries, chunk):
                for r, reg in enumerate(l2_regs):
                    out[r, start:start + len(z)] = ((z / (self.eigs + reg)) @ self.coef).argmax(1)
        return out

    def scores(self, queries: np.ndarray, l2_reg: float, chunk: int = 2048) -> np.ndarray:
        """(M, C) float32 scores of every query for one L2 penalty."""
        out = np.empty((len(queries), self.coef.shape[1]), np.float32)
        with _blas_threads(queries):
            for start, z in self._projected(queries, chunk):
                out[start:start + len(z)] = (z / (self.eigs + l2_reg)) @ self.coef
        return out


def _standardized_with_bias(train: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, D + 1) float64 standardised features with the bias column, built in one array; mean, std."""
    n, d = train.shape
    x = np.empty((n, d + 1))
    x[:, :d] = train
    mean = x[:, :d].mean(axis=0, keepdims=True)
    std = x[:, :d].std(axis=0, keepdims=True) + 1e-5
    x[:, :d] -= mean
    x[:, :d] /= std
    x[:, d] = _BIAS
    return x, mean, std


def fewshot_fit(train: np.ndarray, train_labels: np.ndarray, num_classes: int, form: str = "auto") -> FewshotFit:
    """Least-squares regression onto {-1, +1} targets, decomposed once for every L2 penalty.

    Args:
        form: primal (a (D+1)^2 eigendecomposition), dual (N^2), or auto: primal when N >= D + 1.

    >>> x = np.array([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9]])
    >>> fit = fewshot_fit(x, np.array([0, 0, 1, 1]), 2)
    >>> fit.form, fit.predictions(np.array([[1.0, 0.0], [0.0, 0.8]]), l2_regs=(1.0,)).tolist()
    ('primal', [[0, 1]])
    """
    x, mean, std = _standardized_with_bias(train)
    labels = np.asarray(train_labels)
    if form == "auto":
        form = "primal" if x.shape[0] >= x.shape[1] else "dual"
    with _blas_threads(x):
        if form == "primal":  # W = (X^T X + l2 I)^-1 X^T Y, X^T X = U diag(e) U^T
            eigs, vecs = np.linalg.eigh(x.T @ x)
            sums = np.zeros((num_classes, x.shape[1]))
            np.add.at(sums, labels, x)  # X^T Y = 2 (class sums)^T - column sums: no (N, C) targets
            proj, coef = vecs, vecs.T @ (2.0 * sums.T - x.sum(axis=0)[:, None])
        elif form == "dual":  # W = X^T (X X^T + l2 I)^-1 Y, X X^T = V diag(e) V^T (N < D: small)
            eigs, vecs = np.linalg.eigh(x @ x.T)
            proj, coef = x.T @ vecs, vecs.T @ (2.0 * np.eye(num_classes)[labels] - 1.0)
        else:
            raise ValueError(f"form={form!r}: primal, dual or auto")
    return FewshotFit(mean, std, proj, eigs, coef, form)
