"""An optuna search with and without pruning, on the bundled digits: same trials, fewer epochs?

    python benchmarks/bench_search.py [--trials 16] [--epochs 8] [--pruners median hyperband] [--sampler random]

Runs `vitcli train -m hparams_search=optuna` twice: the search space of
conf/hparams_search/optuna.yaml (lr x weight decay x drop path), `--trials` trials of
`--epochs` epochs each, one job at a time; first with hydra/sweeper/pruner=none, then with
each of `--pruners`. Prints, for each, the best val top-1, the epochs trained by all trials together
(summed from the jobs' summary.json) and the wall time, and the pruned/unpruned ratios.
Goal (issue 22): the same best top-1 (within 0.3 point) for at most half the epochs.

The random sampler (seeded) proposes the same trials in both searches, so the difference is
the pruner's alone; with TPE the two searches would also sample different points. The median
pruner waits `--warmup` epochs (an 8-epoch digits run is still noisy in its first two: pruning
there cut the trials that ended best) and starts after `--startup` finished trials;
hyperband uses optuna's defaults with max_resource = --epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def search(root: Path, name: str, pruner: list[str], args: argparse.Namespace) -> dict:
    sweep_dir = root / name
    overrides = [
        "hparams_search=optuna", f"hydra.sweeper.n_trials={args.trials}", f"hydra/sweeper/sampler={args.sampler}",
        f"hydra.sweeper.sampler.seed={args.seed}", f"hydra.sweeper.storage={sweep_dir / 'study.log'}",
        f"hydra.sweeper.study_name={name}", f"hydra.sweep.dir={sweep_dir}", *pruner,
        "data=digits", f"trainer.epochs={args.epochs}", f"trainer.threads={args.threads}", "trainer.progress=none",
        "trainer.export_safetensors=false", f"runs_root={root}",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "vitcli", "train", "-m", *overrides], capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - t0
    (root / f"{name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{name} search failed ({proc.returncode}); see {root / f'{name}.log'}")
    jobs = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/summary.json"))]
    best = max((j["best"]["val_top1"] for j in jobs if j.get("best")), default=float("nan"))
    return {"name": name, "best": best, "epochs": sum(j.get("epochs_completed") or 0 for j in jobs),
            "pruned": sum(j.get("status") == "pruned" for j in jobs), "trials": len(jobs), "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=8, help="epochs of a trial that is not pruned")
    ap.add_argument("--pruners", nargs="+", default=["median"], choices=["median", "hyperband"])
    ap.add_argument("--startup", type=int, default=2, help="median: n_startup_trials")
    ap.add_argument("--warmup", type=int, default=2, help="median: n_warmup_steps (epochs never pruned)")
    ap.add_argument("--sampler", default="random", choices=["random", "tpe"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscription on a shared CPU)")
    ap.add_argument("--out", default=None, help="keep the sweeps here (default: a temporary directory)")
    args = ap.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="bench_search_")).absolute()
    root.mkdir(parents=True, exist_ok=True)
    print(f"sweeps under {root}", flush=True)

    rows = [search(root, "no_pruning", ["hydra/sweeper/pruner=none"], args)]
    print(f"no_pruning done in {rows[0]['wall_s']:.0f}s", flush=True)
    for name in args.pruners:
        pruner = [f"hydra/sweeper/pruner={name}"]
        if name == "hyperband":  # rungs up to a full trial from the start (auto waits for one to finish)
            pruner.append(f"hydra.sweeper.pruner.max_resource={args.epochs}")
        else:
            pruner += [f"hydra.sweeper.pruner.n_startup_trials={args.startup}",
                       f"hydra.sweeper.pruner.n_warmup_steps={args.warmup}"]
        rows.append(search(root, name, pruner, args))
        print(f"{name} done in {rows[-1]['wall_s']:.0f}s", flush=True)

    print(f"\n{args.trials} trials x {args.epochs} epochs, {args.sampler} sampler (seed {args.seed}), digits")
    print(f"{'search':<12} {'best val top-1':>15} {'epochs trained':>15} {'pruned trials':>14} {'wall s':>8}")
    for r in rows:
        print(f"{r['name']:<12} {r['best']:>15.2f} {r['epochs']:>15d} {r['pruned']:>10d}/{r['trials']:<3d} "
              f"{r['wall_s']:>8.0f}")
    base = rows[0]
    for r in rows[1:]:
        print(f"\n{r['name']}: best top-1 {r['best'] - base['best']:+.2f} points (goal: within 0.3); "
              f"epochs ratio {r['epochs'] / base['epochs']:.2f} (goal: <= 0.50); "
              f"wall-time ratio {r['wall_s'] / base['wall_s']:.2f}")


if __name__ == "__main__":
    main()
