"""Few-shot probe memory: ImageNet-sized (1,000 classes x 25 shots of 768-d features) through
`vitcli probe method=fewshot`'s own code, and the closed form before and after side by side.

The probe ran one eigendecomposition of the N x N Gram matrix (N = shots x classes: 25,000)
and kept the scores of every query, class and L2 penalty; it now decomposes the (D+1) x (D+1)
covariance when N >= D + 1 and scores the queries in chunks (vitcli/tasks/probe_methods.py).

Every case runs in its own child process, so that its peaks are its own: tracemalloc's peak
(numpy's arrays) during the probe, and the process's peak RSS (VmHWM, everything: Python, torch,
the features). Features are fp16 Gaussian classes, as the probe's cache stores them.

    python benchmarks/bench_fewshot.py                       # 1000 x 25 x 768-d, 10,000 queries, 1 draw
    python benchmarks/bench_fewshot.py --queries 50000 --seeds 5
    python benchmarks/bench_fewshot.py --small-classes 100   # the before/after pair at 100 classes

The pair runs at --small-classes (the old form at 1,000 classes needs tens of GB and, on a
few cores, hours for a 25,000^2 eigendecomposition); its full-size memory is printed as the sizes
of the arrays it held.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np

R = 16  # penalties tried (probe_methods.FEWSHOT_L2)


def _peak_rss_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise KeyError("VmHWM")


def make_features(classes: int, shots: int, queries: int, dim: int, noise: float = 8.0, seed: int = 0):
    """(train fp16, train labels, query fp16, query labels): overlapping Gaussian classes."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (classes, dim)).astype(np.float32)
    ytr = np.repeat(np.arange(classes), shots)
    yq = rng.integers(0, classes, queries)
    xtr = (centres[ytr] + rng.normal(0, noise, (len(ytr), dim)).astype(np.float32)).astype(np.float16)
    xq = (centres[yq] + rng.normal(0, noise, (queries, dim)).astype(np.float32)).astype(np.float16)
    return xtr, ytr, xq, yq


def before(train, train_labels, queries, num_classes, l2_regs):
    """The probe's closed form before this change (dual only, every score kept), for the side-by-side."""
    mean, std = train.mean(axis=0, keepdims=True), train.std(axis=0, keepdims=True) + 1e-5
    x, q = [(np.asarray(a, np.float64) - mean) / std for a in (train, queries)]
    x, q = (np.pad(a, ((0, 0), (0, 1)), constant_values=100.0) for a in (x, q))
    y = 2.0 * np.eye(num_classes)[np.asarray(train_labels)] - 1.0
    eigs, vecs = np.linalg.eigh(x @ x.T)
    vty = vecs.T @ y
    qk = (q @ x.T) @ vecs
    return np.stack([qk @ (vty / (eigs + reg)[:, None]) for reg in l2_regs])  # (R, M, C)


def child(args: argparse.Namespace) -> None:
    """One case in this process: print a JSON line with its peaks, seconds and top-1."""
    import tracemalloc

    from vitcli.tasks import probe, probe_methods as pm
    from vitcli.tasks.probe_features import FeatureSet

    xtr, ytr, xq, yq = make_features(args.classes, args.shots, args.queries, args.dim)
    tracemalloc.start()
    start = time.perf_counter()
    if args.case == "before":
        scores = before(xtr, ytr, xq, args.classes, pm.FEWSHOT_L2)
        top1 = float(100.0 * (scores.argmax(axis=2) == yq).mean(axis=1).max())
        form = "dual (all scores)"
    else:
        feats = {"train": FeatureSet(xtr, ytr, []), "val": FeatureSet(xq, yq, [])}
        p = SimpleNamespace(shots=[args.shots], seeds=args.seeds)
        _, details = probe.fewshot(feats, args.classes, p, "val")
        entry = details["per_shot"][str(args.shots)]
        top1, form = entry["val"]["top1_mean"], entry["form"]
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(json.dumps({"case": args.case, "form": form, "seconds": seconds, "top1": top1,
                      "traced_peak_mib": peak / 2**20, "peak_rss_mib": _peak_rss_mib()}))


def run_case(case: str, classes: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", case, "--classes", str(classes), "--shots", str(args.shots),
           "--queries", str(args.queries if classes == args.classes else args.small_queries),
           "--dim", str(args.dim), "--seeds", str(args.seeds)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return {**json.loads(out.strip().splitlines()[-1]), "classes": classes}


def old_arrays_gib(classes: int, shots: int, queries: int, dim: int) -> float:
    """GiB of the float64 arrays the old form held at once: the Gram matrix and its eigenvectors (N^2 each),
    queries x shots, and the (R, M, C) scores of one draw (the probe kept every draw's)."""
    n = classes * shots
    return 8 * (2 * n * n + queries * n + R * queries * classes + n * (dim + 1)) / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--shots", type=int, default=25)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=10000, help="query (val) features at full size")
    parser.add_argument("--seeds", type=int, default=1, help="draws (probe.seeds)")
    parser.add_argument("--small-classes", type=int, default=60, help="classes of the before/after pair")
    parser.add_argument("--small-queries", type=int, default=2000)
    parser.add_argument("--child", choices=("before", "after"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.case = args.child
        child(args)
        return
    rows = [run_case("before", args.small_classes, args), run_case("after", args.small_classes, args),
            run_case("after", args.classes, args)]
    print(f"few-shot probe, {args.shots} shots x {args.dim}-d fp16 features, {args.seeds} draw(s), 16 L2 penalties")
    print(f"{'case':<8}{'classes':>8}{'N':>8}{'queries':>9}  {'form':<18}{'numpy peak':>12}{'peak RSS':>11}"
          f"{'seconds':>9}{'top-1':>8}")
    for r in rows:
        queries = args.queries if r["classes"] == args.classes else args.small_queries
        print(f"{r['case']:<8}{r['classes']:>8}{r['classes'] * args.shots:>8}{queries:>9}  {r['form']:<18}"
              f"{r['traced_peak_mib']:>9.0f} MiB{r['peak_rss_mib']:>7.0f} MiB{r['seconds']:>9.1f}{r['top1']:>8.2f}")
    b, a = rows[0], rows[1]
    print(f"at {args.small_classes} classes: after/before numpy peak {a['traced_peak_mib'] / b['traced_peak_mib']:.3f}, "
          f"seconds {a['seconds'] / b['seconds']:.2f}, top-1 {b['top1']:.2f} vs {a['top1']:.2f}")
    if abs(a["top1"] - b["top1"]) > 0.5:
        print("  (top-1 differs: the old form took the fp16 features' mean and std in fp16, whose sums of squares "
              "overflow past 65,504: std inf, every feature 0)")
    full = rows[2]
    print(f"at {args.classes} classes: peak RSS {full['peak_rss_mib'] / 1024:.2f} GiB (budget 4 GiB); the old form's "
          f"arrays alone: {old_arrays_gib(args.classes, args.shots, args.queries, args.dim):.1f} GiB per draw")


if __name__ == "__main__":
    main()
