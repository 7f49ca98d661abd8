"""The default `vitcli train` end to end: how much of its wall time is not the training step.

    python benchmarks/bench_e2e.py [--rounds 2] [--runs 3] [-- EXTRA OVERRIDES]   (e.g. -- trainer.epochs=8)

Side by side in one script:

1. the bare-loop rate of this machine today: forward, cross-entropy, backward, AdamW over the
   default run's own model and batches (benchmarks/bench_train.py's loop), images/s, so a slow day
   can be told from slow code;
2. the default run itself (`python -m vitcli train`, a real process), read back from its phase
   record (summary.json `phases`): wall time, each phase, and the non-step share (goal: <= 10%),
   plus its best val top-1;
3. the bare loop again, after the run (the machine may have changed under it).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import bare_epoch  # noqa: E402  (the same bare loop bench_train measures)

GOAL = 0.10  # the most of the default run's wall time that may go to anything but the step


def bare_rate(overrides: list[str], rounds: int) -> float:
    """Images/s of the bare loop over one epoch of the default run's batches (median of `rounds`)."""
    from hydra import compose, initialize_config_module

    import vitcli.core.config_store  # noqa: F401
    from vitcli.engine.trainer import Trainer

    with initialize_config_module(config_module="vitcli.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["trainer.progress=none", *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp))
        loader = trainer.parts.train_loader
        loader.set_epoch(0)
        batches = [(x.clone(), y.clone()) for x, y in loader]
        model = copy.deepcopy(trainer.parts.model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    bare_epoch(model, opt, batches[:2])  # warm-up
    images = sum(len(y) for _, y in batches)
    return images / statistics.median(bare_epoch(model, opt, batches) for _ in range(rounds))


def default_run(overrides: list[str]) -> dict:
    """The run's summary.json after `python -m vitcli train OVERRIDES` in a scratch dir."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "WANDB_MODE": "offline"}
        cmd = [sys.executable, "-m", "vitcli", "train", "trainer.progress=plain", *overrides, "hydra.run.dir=run"]
        launched = time.time()
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        summary = json.loads((Path(tmp) / "run" / "summary.json").read_text())
        summary["process_s"] = time.time() - launched
        return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="bare-loop epochs per measurement (median)")
    parser.add_argument("--runs", type=int, default=1, help="default runs, one after another (median share)")
    parser.add_argument("overrides", nargs="*", help="overrides of the default run (after --)")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"{'cuda' if torch.cuda.is_available() else 'cpu'}; overrides: {' '.join(args.overrides) or '(none)'}")
    before = bare_rate(args.overrides, args.rounds)
    print(f"bare loop before the runs: {before:8.1f} img/s", flush=True)
    shares = []
    for r in range(args.runs):
        summary = default_run(args.overrides)
        wall, phases = summary["wall_s"], summary["phases"]
        print(f"\ndefault run {r + 1}/{args.runs}: {summary['epochs_completed']} epochs, best val top-1 "
              f"{summary['best']['val_top1']:.2f}, {wall:.1f} s wall in the run's clock ({summary['process_s']:.1f} s "
              f"whole process), {summary['train_images_per_s']:.0f} img/s in its epochs")
        for name, seconds in phases.items():
            print(f"  {name:<14} {seconds:8.1f} s  {100 * seconds / wall:5.1f}%")
        shares.append(1 - phases["step"] / wall)
        print(f"  non-step share {100 * shares[-1]:.1f}%", flush=True)
    after = bare_rate(args.overrides, args.rounds)
    print(f"\nbare loop after the runs : {after:8.1f} img/s")
    share = statistics.median(shares)
    print(f"non-step share, median of {args.runs} run(s) ({', '.join(f'{100 * s:.1f}%' for s in shares)}): "
          f"{100 * share:.1f}% (goal <= {100 * GOAL:.0f}%): {'met' if share <= GOAL else 'NOT met'}")

if __name__ == "__main__":
    main()
