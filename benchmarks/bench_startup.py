"""`vitcli train` from process start to its first training step: the default run and one sweep job.

    python benchmarks/bench_startup.py [--repeats 2] [--importtime] [-- EXTRA OVERRIDES]

Each measurement is a real `python -m vitcli train` process (one epoch, so it ends soon after its
first step). The figures come from the run's own phase record (summary.json: `started_at`, the
clock's start as a Unix time, and `phases.startup`, from then until the first step), plus the time
from launching the process to that clock start (the interpreter, before vitcli's first import):

    before vitcli   process launch -> vitcli's first import (Python itself)
    startup         vitcli's import -> first step (imports, Hydra compose, data, model, optimizer)
    to first step   the sum

The sweep job is `vitcli train -m trainer.seed=0` (one job of a basic multirun). --importtime
prints the slowest imports of one run (python -X importtime), to see what start-up loads.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["trainer.epochs=1", "trainer.progress=plain"]


def first_step(args: list[str], summary_glob: str, workdir: Path) -> tuple[float, float]:
    """(seconds before vitcli's import, seconds of the startup phase) of one `vitcli ARGS` process."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    launched = time.time()
    proc = subprocess.run([sys.executable, "-m", "vitcli", *args], cwd=workdir, env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        sys.exit(f"vitcli {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    summary = json.loads(next(workdir.glob(summary_glob)).read_text())
    return summary["started_at"] - launched, summary["phases"]["startup"]


def measure(name: str, args: list[str], summary_glob: str, repeats: int) -> dict[str, float]:
    before, startup = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            b, s = first_step(args, summary_glob, Path(tmp))
        before.append(b)
        startup.append(s)
    row = {"before": statistics.median(before), "startup": statistics.median(startup)}
    row["total"] = row["before"] + row["startup"]
    print(f"{name:<14} {row['before']:>13.2f} {row['startup']:>10.2f} {row['total']:>15.2f}", flush=True)
    return row


def slowest_imports(args: list[str], top: int = 15) -> None:
    """The imports with the most cumulative time in one run (python -X importtime)."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "vitcli", *args], cwd=tmp,
                              capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "offline"})
    rows = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m and len(m.group(3)) <= 3:  # top-level imports (and their first level)
            rows.append((int(m.group(2)) / 1e6, m.group(4)))
    print(f"\nslowest imports (cumulative seconds, python -X importtime, top {top}):")
    for seconds, module in sorted(rows, reverse=True)[:top]:
        print(f"  {seconds:6.2f}  {module}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="runs per row (the median is printed)")
    parser.add_argument("--importtime", action="store_true", help="also list the slowest imports of one run")
    parser.add_argument("overrides", nargs="*", help="extra overrides for both runs (after --)")
    args = parser.parse_args()
    default = ["train", *QUICK, *args.overrides, "hydra.run.dir=run"]
    sweep = ["train", "-m", "trainer.seed=0", *QUICK, *args.overrides, "hydra.sweep.dir=sweep"]
    print(f"vitcli train to its first step (seconds, median of {args.repeats}; {os.cpu_count()} CPUs)")
    print(f"{'':<14} {'before vitcli':>13} {'startup':>10} {'to first step':>15}")
    measure("default run", default, "run/summary.json", args.repeats)
    measure("sweep job", sweep, "sweep/0/summary.json", args.repeats)
    if args.importtime:
        slowest_imports(default)


if __name__ == "__main__":
    main()
