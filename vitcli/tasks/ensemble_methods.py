"""Combining several models' predictions: vectorised numpy over a (members, samples, classes) stack.

Every method returns log-probabilities (N, C) float32, so an ensemble's output
is itself a prediction set (softmax of it gives the ensemble's distribution):

- vote: majority of the members' top-1, ties broken by the summed probability;
- weighted_vote: the same with each vote weighted (by default, by the member's accuracy);
- mean_prob: (weighted) mean of softmax(logits / T_m);
- mean_logit: (weighted) mean of logits / T_m, then softmax;
- greedy: forward selection with replacement on a labelled split (Caruana et al.,
  "Ensemble Selection from Libraries of Models", ICML 2004); the chosen counts
  become mean_prob weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from vitcli.core.errors import UserError
from vitcli.core.predictions import softmax

_TINY = np.finfo(np.float32).tiny


def _normalise(weights: Optional[Sequence[float]], m: int) -> np.ndarray:
    w = np.ones(m, dtype=np.float64) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (m,) or (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise UserError(f"weights needs {m} non-negative values (one per member) with a positive sum, got {list(w)}")
    return w / w.sum()


def _log(p: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(p, _TINY)).astype(np.float32)


def vote_scores(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(N, C) scores ranking classes by (weighted) votes, then by the weighted mean probability.

    The probability term is scaled below half the smallest gap between two distinct vote
    totals, so it only ever breaks ties and never overturns a vote.
    """
    m, n, c = probs.shape
    top1 = probs.argmax(axis=-1)  # (M, N)
    flat = (np.arange(n)[None, :] * c + top1).ravel()  # one bincount over every member's vote
    votes = np.bincount(flat, weights=np.repeat(weights, n), minlength=n * c).reshape(n, c)
    votes = np.round(votes, 9)
    levels = np.unique(np.append(votes[votes > 0], 0.0))  # at most M*N non-zero totals: cheap
    gap = np.diff(levels).min() if len(levels) > 1 else 1.0
    mean_prob = np.tensordot(weights.astype(np.float32), probs, axes=1)  # (N, C), in [0, 1]
    return votes + 0.5 * gap * mean_prob


def combine(method: str, logits: np.ndarray, weights: Optional[Sequence[float]] = None,
            temperatures: Optional[Sequence[float]] = None) -> np.ndarray:
    """Ensemble log-probabilities (N, C) from a (M, N, C) logit stack (greedy: pass its weights)."""
    stack = np.asarray(logits, dtype=np.float32)
    w = _normalise(weights, stack.shape[0])
    if method == "mean_logit":
        x = stack if temperatures is None else stack / np.asarray(temperatures, np.float32)[:, None, None]
        mean = np.tensordot(w.astype(np.float32), x, axes=1)
        mean -= mean.max(axis=1, keepdims=True)
        return (mean - np.log(np.exp(mean).sum(axis=1, keepdims=True))).astype(np.float32)  # log-softmax
    probs = softmax(stack, temperatures)
    if method in ("mean_prob", "greedy"):
        return _log(np.tensordot(w.astype(np.float32), probs, axes=1))
    scores = vote_scores(probs, w)
    return _log(scores / scores.sum(axis=1, keepdims=True))


@dataclass
class GreedyResult:
    counts: np.ndarray  # (M,) how often each member was picked in the best bag
    history: list[tuple[int, float, float]]  # (member picked, top-1 %, NLL) after each round
    best_round: int  # 1-based round whose bag is kept


def greedy_select(logits: np.ndarray, labels: np.ndarray, steps: int = 25,
                  temperatures: Optional[Sequence[float]] = None, metric: str = "nll") -> GreedyResult:
    """Caruana forward selection with replacement: each round adds the member whose addition gives the
    best mean-probability ensemble on the labelled split; the best bag seen is kept.

    metric=nll (default) ranks by log loss, then top-1; metric=top1 by top-1, then log loss. Top-1 on a
    few thousand samples rewards adding noisy members that happen to flip borderline samples; NLL does not.
    """
    if steps < 1:
        raise UserError(f"greedy_steps={steps} must be at least 1")
    probs = softmax(logits, temperatures)  # (M, N, C)
    m, n, _ = probs.shape
    y = np.asarray(labels, dtype=np.int64)
    rows = np.arange(n)
    true_p = probs[:, rows, y]  # (M, N): each member's probability of the true class
    bag_sum = np.zeros(probs.shape[1:], dtype=np.float32)
    bag_true = np.zeros(n, dtype=np.float64)
    counts = np.zeros(m, dtype=np.int64)
    history: list[tuple[int, float, float]] = []
    best: tuple[float, float] | None = None
    best_counts, best_round = counts, 0
    buf = np.empty_like(probs)
    for k in range(1, steps + 1):
        nll = -np.log(np.maximum((bag_true[None] + true_p) / k, _TINY)).mean(axis=1)  # (M,): cheap
        # top-1 needs the argmax of bag + candidate over every class: for metric=nll only for NLL ties
        cands = np.arange(m) if metric == "top1" else np.flatnonzero(nll == nll.min())
        view = buf[: len(cands)]
        np.add(probs[cands], bag_sum[None], out=view)
        acc = np.full(m, -1.0)
        acc[cands] = (view.argmax(axis=-1) == y).mean(axis=1)
        pick = int(np.lexsort((nll, -acc) if metric == "top1" else (-acc, nll))[0])
        bag_sum += probs[pick]
        bag_true += true_p[pick]
        counts[pick] += 1
        history.append((pick, 100.0 * float(acc[pick]), float(nll[pick])))
        score = (acc[pick], -nll[pick]) if metric == "top1" else (-nll[pick], acc[pick])
        if best is None or score > best:
            best, best_counts, best_round = score, counts.copy(), k
    return GreedyResult(best_counts, history, best_round)


def check_finite(logits: np.ndarray, where: str) -> None:
    bad = ~np.isfinite(logits)
    if bad.any():
        raise UserError(f"{where} holds {int(bad.sum())} NaN or infinite logits; re-run `vitcli predict` for it "
                        "(a diverged model cannot join an ensemble)")


def check_classes(names_a: list[str], names_b: list[str], a: str, b: str) -> None:
    if len(names_a) != len(names_b):
        raise UserError(f"members disagree on the classes: {a} has {len(names_a)}, {b} has {len(names_b)}")
    for i, (x, y) in enumerate(zip(names_a, names_b)):
        if x != y:
            raise UserError(f"members disagree on class {i}: '{x}' in {a} but '{y}' in {b}")


def align(ref_ids: list[str], ids: list[str], a: str, b: str) -> np.ndarray | None:
    """Row order that brings `ids` into `ref_ids` order (None when already aligned)."""
    if ids == ref_ids:
        return None
    pos = {s: i for i, s in enumerate(ids)}
    missing = [s for s in ref_ids if s not in pos]
    if missing or len(ids) != len(ref_ids):
        extra = len(set(ids) - set(ref_ids))
        example = f" (e.g. '{missing[0]}')" if missing else ""
        raise UserError(f"members predict different samples: {a} has {len(ref_ids)} ids, {b} has {len(ids)}; "
                        f"{len(missing)} of {a}'s are missing from {b}{example} and {extra} are extra")
    return np.fromiter((pos[s] for s in ref_ids), dtype=np.int64, count=len(ref_ids))
