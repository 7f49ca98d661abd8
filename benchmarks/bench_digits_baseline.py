"""The default `vitcli train` recipe vs the classical baseline on the same digits splits.

    python benchmarks/bench_digits_baseline.py                     # SVM only (seeds 0 1 2)
    python benchmarks/bench_digits_baseline.py --runs DIR0 DIR1 DIR2  # + vitcli runs of those seeds

The baseline is an RBF SVM (scikit-learn `SVC(gamma=0.001, C=10)`) on the raw
8x8 pixels (0..16), fitted on the train part of vitcli's stratified 80/20 split
for `data.split_seed=S` and scored on its val part. vitcli's figures are read
from the run directories of `vitcli train data.split_seed=S trainer.seed=S`
(best val_top1, its epoch and wall_time_s in summary.json), one per seed, in seed order.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def svm_top1(split_seed: int) -> tuple[float, float]:
    """(val top-1 %, seconds to fit and score) of the RBF SVM on vitcli's split `split_seed`."""
    from sklearn.datasets import load_digits
    from sklearn.svm import SVC

    from vitcli.data.arrays import stratified_split

    digits = load_digits()
    train_idx, val_idx = stratified_split(digits.target, 0.2, split_seed)
    t0 = time.perf_counter()
    clf = SVC(gamma=0.001, C=10).fit(digits.data[train_idx], digits.target[train_idx])
    acc = 100.0 * float((clf.predict(digits.data[val_idx]) == digits.target[val_idx]).mean())
    return acc, time.perf_counter() - t0


def run_figures(run_dir: str) -> tuple[int, float, int, float]:
    """(split_seed, best val_top1, its epoch, wall_time_s) of a finished vitcli run."""
    import yaml

    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    cfg = yaml.safe_load((Path(run_dir) / "config.yaml").read_text())
    best = summary["best"]
    return int(cfg["data"]["split_seed"]), float(best["val_top1"]), int(best["epoch"]), float(summary["wall_time_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", nargs="*", default=[], help="vitcli run dirs (their split_seed is read)")
    args = parser.parse_args()

    runs = {seed: figures for seed, *figures in map(run_figures, args.runs)}
    seeds = sorted(set(args.seeds) | set(runs))
    print(f"{'split_seed':>10}  {'SVM top1':>9}  {'SVM s':>6}  {'vitcli top1':>11}  {'best epoch':>10}  {'vitcli s':>8}")
    svm_all, vit_all = [], []
    for seed in seeds:
        acc, secs = svm_top1(seed)
        svm_all.append(acc)
        vit = runs.get(seed)
        if vit:
            vit_all.append(vit[0])
        vit_txt = f"{vit[0]:11.2f}  {vit[1]:10d}  {vit[2]:8.1f}" if vit else f"{'-':>11}  {'-':>10}  {'-':>8}"
        print(f"{seed:>10}  {acc:9.2f}  {secs:6.2f}  {vit_txt}")
    vit_mean = f"{statistics.mean(vit_all):11.2f}" if vit_all else f"{'-':>11}"
    print(f"{'mean':>10}  {statistics.mean(svm_all):9.2f}  {'':>6}  {vit_mean}")


if __name__ == "__main__":
    main()
