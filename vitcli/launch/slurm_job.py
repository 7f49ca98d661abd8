"""The process of a job that hydra/launcher=slurm submits: launch/slurm_launcher.py makes submitit
run `python -u -m vitcli.launch.slurm_job -u -m submitit.core._submit FOLDER`, so SLURM's
time-limit warning (SIGUSR2) only raises vitcli's stop flag from the first line on, before
submitit, Hydra and torch are imported (a one-minute limit warns while they still load), and
then hands over to submitit's own job runner.
"""

from __future__ import annotations

import runpy
import signal
import sys

from vitcli.launch import interrupts


def main(argv: list[str]) -> None:
    """argv: what submitit appends to its python command (`-u -m submitit.core._submit FOLDER`)."""
    interrupts.take((signal.SIGUSR2,))
    module = argv.index("-m") + 1
    sys.argv = [argv[module], *argv[module + 1:]]
    runpy.run_module(argv[module], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
