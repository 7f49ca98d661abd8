"""Wall time of the commands a new user types first, before and after, side by side in one run.

    python benchmarks/bench_help.py [--repeats 5] [--before /work/main/.venv/bin/vitcli | --before COMMIT]

Times `vitcli --help`, `vitcli train --help`, `vitcli eval --help`, `vitcli models` and `vitcli info`
as fresh processes (start-up included, as a user sees it): best and median wall time of N, and the best
CPU time (user + system), which a busy machine inflates far less than wall time. The runs of the two
versions alternate, so a machine that gets busier or quieter weighs on both alike. --before takes an
executable (another checkout's `vitcli`) or a git commit of this repository (checked out with
`git worktree` into a temporary folder and run with this interpreter). Without --before only the
current figures are printed. The machine's load average is printed before and after: on a shared
box the figures are only comparable within one run.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [["--help"], ["train", "--help"], ["eval", "--help"], ["models"], ["info"]]


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of `command`."""
    start, cpu = time.perf_counter(), cpu_of_children()
    proc = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start, cpu_of_children() - cpu
    if proc.returncode not in (0, 2):  # the old `vitcli --help` of no command exits 2 by design
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return elapsed


def version_from(spec: str, scratch: Path) -> tuple[list[str], dict[str, str]]:
    """(command prefix, extra environment) of an executable path or a git commit."""
    if Path(spec).is_file():
        return [spec], {}
    tree = scratch / "before"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), spec], check=True,
                   capture_output=True)
    return [sys.executable, "-m", "vitcli"], {"PYTHONPATH": str(tree)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--before", help="an executable (e.g. /work/main/.venv/bin/vitcli) or a git commit")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        cwd = scratch / "cwd"  # an empty runs root: `vitcli info` counts nothing
        cwd.mkdir()
        base_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        versions = {"after": ([sys.executable, "-m", "vitcli"], {"PYTHONPATH": str(ROOT)})}
        if args.before:
            versions = {"before": version_from(args.before, scratch), **versions}
        print(f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} (1 min) at the start; "
              f"best / median of {args.repeats} fresh processes")
        listed = {name: subprocess.run([*prefix, "--help"], env={**base_env, **extra}, cwd=cwd,  # -m: cwd first
                                       capture_output=True, text=True).stdout for name, (prefix, extra) in versions.items()}
        times: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(args.repeats):
            for command in COMMANDS:
                for name, (prefix, extra) in versions.items():
                    if f"  {command[0]} " not in listed[name] and command[0] != "--help":
                        continue  # a version without this command (`vitcli info` is new)
                    t = timed([*prefix, *command], {**base_env, **extra}, cwd)
                    times.setdefault((" ".join(command), name), []).append(t)
        if args.before and not Path(args.before).is_file():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(scratch / "before")],
                           capture_output=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end\n")
    header = f"{'vitcli ...':<16}" + "".join(f"{n + ' best':>14}{n + ' median':>16}{n + ' cpu':>13}"
                                             for n in versions)
    print(header + ("  speed-up (best)" if len(versions) == 2 else ""))
    for command in COMMANDS:
        label = " ".join(command)
        cells, best = "", {}
        for name in versions:
            runs = times.get((label, name))
            if runs is None:
                cells += f"{'-':>14}{'-':>16}{'-':>13}"
                continue
            walls = [w for w, _ in runs]
            best[name] = min(walls)
            cells += f"{min(walls):>13.2f}s{statistics.median(walls):>15.2f}s{min(c for _, c in runs):>12.2f}s"
        ratio = f"  {best['before'] / best['after']:.1f}x" if len(best) == 2 else ""
        print(f"{label:<16}{cells}{ratio}")


if __name__ == "__main__":
    main()
