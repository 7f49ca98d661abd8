"""`hydra/launcher=slurm`: hydra-submitit-launcher's SLURM launcher with vitcli's rules
(vitcli/launch/slurm_launcher.py). Hydra imports every hydra_plugins module at start-up, so
vitcli is imported here only when a sweep is launched."""

from __future__ import annotations

from typing import Any, Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher


class VitcliSlurmLauncher(SlurmLauncher):
    """submitit's SLURM launcher that caps the warning signal at a quarter of the time limit,
    keeps SLURM's warning for vitcli inside the job, waits for requeued jobs on squeue, and
    records jobs that ended without a result (with their log files)."""

    def __init__(self, **params: Any) -> None:
        from vitcli.launch.slurm_launcher import signal_delay

        super().__init__(**params)
        self.params["signal_delay_s"] = signal_delay(int(self.params.get("signal_delay_s", 120)),
                                                     int(self.params.get("timeout_min", 60)))

    def __call__(self, *args: Any) -> JobReturn:
        from vitcli.launch.slurm_launcher import run_task

        return run_task(super().__call__, *args)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from vitcli.core.errors import report_user_errors  # no SLURM here: one line, not a traceback
        from vitcli.launch.slurm_launcher import launch

        return report_user_errors(launch)(self, job_overrides, initial_job_idx)
