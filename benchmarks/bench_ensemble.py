"""Ensemble combine time: 9 members x 10,000 samples x 100 classes (a MiniPlaces test set).

    python benchmarks/bench_ensemble.py [--members 9] [--samples 10000] [--classes 100] [--repeats 5]

Times every method of `vitcli.tasks.ensemble_methods.combine` (vectorised numpy over the
(members, samples, classes) stack), Caruana greedy selection on a labelled split
of the same size (25 rounds), and reading the members' predictions npz files.
For scale, a per-sample Python loop doing the same vote / mean-prob work is timed
side by side. Prints the median of --repeats runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def loop_vote(stack: np.ndarray) -> np.ndarray:
    """Reference: majority vote per sample in Python, ties by summed probability."""
    m, n, _ = stack.shape
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        rows = stack[:, i]
        p = np.exp(rows - rows.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        votes = Counter(int(v) for v in rows.argmax(1))
        best = max(votes.values())
        tied = [c for c, v in votes.items() if v == best]
        out[i] = max(tied, key=lambda c: p[:, c].sum())
    return out


def loop_mean_prob(stack: np.ndarray) -> np.ndarray:
    m, n, _ = stack.shape
    out = np.empty(stack.shape[1:], dtype=np.float32)
    for i in range(n):
        acc = np.zeros(stack.shape[2])
        for j in range(m):
            e = np.exp(stack[j, i] - stack[j, i].max())
            acc += e / e.sum()
        out[i] = np.log(acc / m)
    return out


def main() -> None:
    from vitcli.core.predictions import Predictions, load_predictions
    from vitcli.tasks import ensemble_methods as E

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=9)
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    m, n, c = args.members, args.samples, args.classes
    rng = np.random.default_rng(0)
    y = rng.integers(0, c, n)
    # members of varying skill: a noisy logit bump on the true class
    stack = np.stack([rng.normal(size=(n, c)).astype(np.float32) + (1.0 + 0.3 * k) * np.eye(c, dtype=np.float32)[y]
                      for k in range(m)])
    acc = np.array([(s.argmax(1) == y).mean() for s in stack])
    print(f"{m} members x {n:,} samples x {c} classes; member top-1 {acc.min():.1%}..{acc.max():.1%}")
    rows: list[tuple[str, float]] = []
    for method in ("vote", "weighted_vote", "mean_prob", "mean_logit"):
        w = acc if method == "weighted_vote" else None
        rows.append((f"combine {method}", median_time(lambda: E.combine(method, stack, w), args.repeats)))
    res = E.greedy_select(stack, y, 25)
    for metric in ("nll", "top1"):
        rows.append((f"greedy select (25 rounds, {metric}) + combine", median_time(
            lambda: E.combine("greedy", stack, E.greedy_select(stack, y, 25, metric=metric).counts), args.repeats)))
    with tempfile.TemporaryDirectory() as tmp:
        ids = [f"test/{i:08d}.jpg" for i in range(1, n + 1)]
        paths = [Predictions(s, ids, [str(k) for k in range(c)], y).save(Path(tmp) / f"{k}.npz")
                 for k, s in enumerate(stack)]
        rows.append((f"read {m} predictions npz", median_time(lambda: [load_predictions(p) for p in paths],
                                                              args.repeats)))
    width = max(len(r[0]) for r in rows)
    for name, t in rows:
        print(f"  {name:<{width}}  {t * 1000:8.1f} ms")
    ens = E.combine("greedy", stack, res.counts)
    print(f"greedy kept round {res.best_round}, counts {res.counts.tolist()}, "
          f"ensemble top-1 {(ens.argmax(1) == y).mean():.1%}")
    t_vec_vote = dict(rows)["combine vote"]
    t_vec_mean = dict(rows)["combine mean_prob"]
    t_loop_vote = median_time(lambda: loop_vote(stack), 1)
    t_loop_mean = median_time(lambda: loop_mean_prob(stack), 1)
    assert (loop_vote(stack[:, :500]) == E.combine("vote", stack[:, :500]).argmax(1)).all()
    print(f"per-sample Python loop, same work:  vote {t_loop_vote * 1000:.0f} ms ({t_loop_vote / t_vec_vote:.0f}x slower), "
          f"mean_prob {t_loop_mean * 1000:.0f} ms ({t_loop_mean / t_vec_mean:.0f}x slower)")


if __name__ == "__main__":
    main()
