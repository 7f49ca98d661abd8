"""The training step with glibc's default allocator thresholds and with vitcli's (vitcli/core/malloc_tuning.py).

    python benchmarks/bench_malloc.py [--pairs 4] [--rounds 3] [-- EXTRA OVERRIDES]   (e.g. -- model=vit_t)

Side by side in one script: fresh processes, alternating default / tuned, each measuring
bench_e2e's bare loop (forward, cross-entropy, backward, AdamW over the default run's own model
and batches) and the minor page faults per step while it runs. A fresh process per measurement
because glibc's thresholds move by themselves once set or once blocks are freed: one process
cannot go back to the defaults. Prints each pair and the median ratio tuned / default.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def child(mode: str, overrides: list[str], rounds: int) -> None:
    """In a fresh process: tune (or not), then print `img/s faults_per_step` of the bare loop."""
    from vitcli.core import malloc_tuning

    if mode == "tuned" and not malloc_tuning.tune():
        sys.exit("the allocator could not be tuned here (not glibc, or MALLOC_* / LD_PRELOAD set)")
    import bench_e2e

    rusage = resource.getrusage
    faults, steps = [], []

    def counting(model, opt, batches):  # bench_train.bare_epoch, with the faults of each epoch
        before = rusage(resource.RUSAGE_SELF).ru_minflt
        seconds = bare_epoch(model, opt, batches)
        faults.append(rusage(resource.RUSAGE_SELF).ru_minflt - before)
        steps.append(len(batches))
        return seconds

    bare_epoch, bench_e2e.bare_epoch = bench_e2e.bare_epoch, counting
    rate = bench_e2e.bare_rate(overrides, rounds)
    print(f"{rate:.1f} {faults[-1] / steps[-1]:.0f}")


def measure(mode: str, overrides: list[str], rounds: int) -> tuple[float, float]:
    cmd = [sys.executable, __file__, "--child", mode, "--rounds", str(rounds), "--", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    rate, faults = proc.stdout.split()[-2:]
    return float(rate), float(faults)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=4, help="default/tuned process pairs, alternating")
    parser.add_argument("--rounds", type=int, default=3, help="bare-loop epochs per process (median)")
    parser.add_argument("--child", choices=("default", "tuned"), help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="overrides of the default run (after --)")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.overrides, args.rounds)
        return
    ratios = []
    for pair in range(args.pairs):
        plain, plain_faults = measure("default", args.overrides, args.rounds)
        tuned, tuned_faults = measure("tuned", args.overrides, args.rounds)
        ratios.append(tuned / plain)
        print(f"pair {pair + 1}: default {plain:7.1f} img/s ({plain_faults:6.0f} faults/step)   "
              f"tuned {tuned:7.1f} img/s ({tuned_faults:6.0f} faults/step)   {ratios[-1]:.3f}x", flush=True)
    print(f"tuned / default, median of {args.pairs} pairs: {statistics.median(ratios):.3f}x "
          f"(overrides: {' '.join(args.overrides) or '(none)'})")


if __name__ == "__main__":
    main()
