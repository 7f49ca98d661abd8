"""`vitcli plan`'s ETA against the real run's time, measured side by side in one sitting.

    python benchmarks/bench_plan.py [--cases default,vit_s_224] [--device cpu] [--default-epochs 40] [--threads 1]

For each case: `vitcli plan OVERRIDES`, `vitcli train OVERRIDES`, then `vitcli plan OVERRIDES` again, as
processes in a temporary directory. Prints the first plan's ETA (what a user sees), the train command's
wall time (process start to exit) and their ratio (goal: within 25%), and the ratio of the two plans'
mean (on a shared machine they bracket the load the run saw), with the parts side by side (first plan /
run): setup (the train process's time outside summary.json's wall_time_s, exit included), train seconds
per epoch (metrics.jsonl's epoch_time_s) and the rest of an epoch (evaluation, checkpoints, curves: the
run's wall_time_s minus its training, per epoch). The 1-minute load average is printed at the start
and end of each command: on a shared machine, torch's spinning OpenMP threads make a step's time swing
far more than the load does; --threads 1 (trainer.threads=1 for plan and run alike) damps that.

Cases:
  default    `vitcli train` as shipped: vit_pico on the bundled digits, 40 epochs
  vit_s_224  ViT-S/16 at 224 px (22M params) on 120 synthetic images (30 val) for 2 epochs, batch 16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    "default": [],
    "vit_s_224": ["model=vit_s", "data=synthetic", "data.num_samples=150", "data.val_fraction=0.2",
                  "data.img_size=224", "data.native_size=32", "data.batch_size=16", "trainer.epochs=2",
                  "plan.warmup=1", "plan.steps=2", "plan.eval_batches=1"],
}


LOADS: list[str] = []


def vitcli(args: list[str], cwd: Path) -> float:
    """Run `python -m vitcli ARGS` in cwd; its wall time in seconds (fails loudly)."""
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "vitcli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "WANDB_MODE": "disabled"})
    wall = time.perf_counter() - t0
    LOADS.append(f"{args[0]} {load:.1f}->{os.getloadavg()[0]:.1f}")
    if proc.returncode != 0:
        sys.exit(f"vitcli {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_case(name: str, overrides: list[str], device: str, threads: int | None) -> dict:
    train_overrides = [o for o in overrides if not o.startswith("plan.")]
    common = [f"trainer.device={device}", "trainer.progress=plain", *([f"trainer.threads={threads}"] if threads else [])]
    LOADS.clear()
    with tempfile.TemporaryDirectory(prefix=f"bench-plan-{name}-") as tmp:
        cwd = Path(tmp)
        plan_wall = vitcli(["plan", *common, *overrides, "plan.out=runs/plans/before"], cwd)
        plan = json.loads((cwd / "runs" / "plans" / "before" / "plan.json").read_text())
        train_wall = vitcli(["train", *common, *train_overrides, "hydra.run.dir=runs/bench"], cwd)
        vitcli(["plan", *common, *overrides, "plan.out=runs/plans/after"], cwd)
        after = json.loads((cwd / "runs" / "plans" / "after" / "plan.json").read_text())
        run_dir = cwd / "runs" / "bench"
        summary = json.loads((run_dir / "summary.json").read_text())
        epochs = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("kind") == "epoch"]
    t = plan["time"]
    train_epoch = statistics.fmean(r["epoch_time_s"] for r in epochs)
    n = len(epochs)
    real_setup = train_wall - summary["wall_time_s"]
    bracketed = (t["eta_s"] + after["time"]["eta_s"]) / 2
    return {"case": name, "eta_s": t["eta_s"], "train_wall_s": train_wall, "ratio": t["eta_s"] / train_wall,
            "eta_after_s": after["time"]["eta_s"], "ratio_bracketed": bracketed / train_wall,
            "plan_wall_s": plan_wall, "epochs": n,
            "setup": (t["setup_s"], real_setup),
            "train_epoch": (t["train_epoch_s"], train_epoch),
            "rest_epoch": (t["eval_epoch_s"] + t["epoch_end_s"], (summary["wall_time_s"] - n * train_epoch) / n),
            "img_s": (plan["throughput"]["images_per_s"], summary.get("train_images_per_s")),
            "after": (after["time"]["setup_s"], after["time"]["train_epoch_s"],
                      after["time"]["eval_epoch_s"] + after["time"]["epoch_end_s"]),
            "loads": ", ".join(LOADS),
            "bound": plan["throughput"]["bound"], "memory_peak_mb": plan["memory"]["peak_bytes"] / 2**20}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="default,vit_s_224")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--default-epochs", type=int, default=None, help="shorten the default run (default: its 40)")
    parser.add_argument("--threads", type=int, default=None, help="trainer.threads for plan and run (default: torch's)")
    args = parser.parse_args()
    print(f"machine: {machine()}; threads: {args.threads or 'torch default'}", flush=True)
    rows = []
    for name in args.cases.split(","):
        overrides = list(CASES[name])
        if name == "default" and args.default_epochs:
            overrides.append(f"trainer.epochs={args.default_epochs}")
        row = run_case(name, overrides, args.device, args.threads)
        rows.append(row)
        print(f"{name}: plan ETA {row['eta_s']:.1f} s, train {row['train_wall_s']:.1f} s, ratio {row['ratio']:.2f}; "
              f"plan after the run: ETA {row['eta_after_s']:.1f} s, mean of both / train {row['ratio_bracketed']:.2f} "
              f"(a plan took {row['plan_wall_s']:.1f} s); plan after: setup {row['after'][0]:.1f} s, train/epoch "
              f"{row['after'][1]:.1f} s, rest/epoch {row['after'][2]:.1f} s; load average (start->end): {row['loads']}",
              flush=True)
    print(f"\n{'case':<10} {'epochs':>6} {'ETA s':>8} {'real s':>8} {'ratio':>6} {'both':>5}   plan / real: {'setup s':>13} "
          f"{'train/epoch s':>15} {'rest/epoch s':>14} {'img/s':>15}  bound    peak MB")
    for r in rows:
        pair = {k: f"{r[k][0]:.1f} / {r[k][1]:.1f}" if r[k][1] is not None else f"{r[k][0]:.1f} / -"
                for k in ("setup", "train_epoch", "rest_epoch", "img_s")}
        print(f"{r['case']:<10} {r['epochs']:>6} {r['eta_s']:>8.1f} {r['train_wall_s']:>8.1f} {r['ratio']:>6.2f} "
              f"{r['ratio_bracketed']:>5.2f}   "
              f"{'':>13}{pair['setup']:>13} {pair['train_epoch']:>15} {pair['rest_epoch']:>14} {pair['img_s']:>15}  "
              f"{r['bound']:<8} {r['memory_peak_mb']:>7.0f}")
    worst = max(abs(r["ratio"] - 1) for r in rows)
    both = max(abs(r["ratio_bracketed"] - 1) for r in rows)
    print(f"\nworst |ETA / real - 1| = {100 * worst:.0f}% (goal: within 25%); with the two plans' mean: {100 * both:.0f}%")


if __name__ == "__main__":
    main()
