"""`hydra/launcher=slurm`: hydra-submitit-launcher's SLURM launcher with vitcli's rules for a
shared cluster. conf/hydra/launcher/slurm.yaml selects the plugin class (Hydra takes launchers
only from the hydra_plugins package: hydra_plugins/vitcli_launcher/); its work is done here.

- The warning signal comes `signal_delay_s` before the time limit, but never more than a quarter
  of the limit, so a short job still trains between its start-up and the warning.
- The submitting side waits for each job until its result file exists or SLURM says the job is
  over (squeue), so a requeued job is waited for and a job that died outside Python (killed,
  cancelled, out of memory) is reported with its SLURM state and log files instead of being
  waited on forever; submitit's own wait asks `sacct`, which needs the accounting database.
- A job that ended without a result is recorded as failed in its run dir's summary.json, and
  the sweep goes on (as vitcli records a job that raised), so sweep_summary.csv names it.

Inside each job the process starts as launch/slurm_job.py (SIGUSR2 only raises vitcli's stop
flag from its first line), then submitit's own runner loads the pickled launcher and runs the
sweep point (`run_task`). A stopped run is requeued through submitit's checkpoint protocol
(launch/requeue.py): the launcher's `checkpoint()` pickles the same sweep point again.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf, open_dict

from vitcli.core import runs
from vitcli.core.errors import UserError
from vitcli.core.io import write_json
from vitcli.launch import interrupts
from vitcli.launch.slurm import queue_states

log = logging.getLogger("vitcli")

# squeue states after which a job never runs again (REQUEUED / PENDING / RUNNING / COMPLETING go on)
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED", "SPECIAL_EXIT"}
RESULT_GRACE_S = 30.0  # a result written just before the end may reach a network filesystem late


def signal_delay(delay_s: int, timeout_min: int) -> int:
    """Seconds between SLURM's warning signal and the time limit: as asked, but at most a quarter
    of the limit (at least 10 s), so a short job trains between its start-up and the warning.
    SLURM may warn up to a minute early; a run the warning misses still stops and is requeued
    at the limit's SIGTERM, within SLURM's KillWait.

    >>> signal_delay(120, 240), signal_delay(120, 4), signal_delay(120, 1)
    (120, 60, 15)
    """
    return int(min(delay_s, max(10, timeout_min * 60 // 4)))


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Submit one job per sweep point (a job array) as hydra-submitit-launcher does, then wait
    for each on squeue and turn a job that left no result into a recorded failure."""
    import submitit

    missing = [tool for tool in ("sbatch", "srun", "squeue") if shutil.which(tool) is None]
    if missing:
        raise UserError(f"hydra/launcher=slurm submits jobs with SLURM's sbatch, srun and squeue, and "
                        f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not on PATH here: run the "
                        "sweep on a SLURM login node, or drop hydra/launcher=slurm to run its jobs on this machine")
    params = dict(launcher.params)
    executor = submitit.AutoExecutor(cluster="slurm", folder=params.pop("submitit_folder"),
                                     slurm_max_num_timeout=params.pop("max_num_timeout"),
                                     slurm_python=f"{shlex.quote(sys.executable)} -u -m vitcli.launch.slurm_job")
    executor.update_parameters(**executor_params(params))
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    log.info(f"Submitit 'slurm' sweep output dir : {sweep_dir}")
    numbered = list(enumerate(job_overrides, start=initial_job_idx))
    for idx, overrides in numbered:
        log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
    jobs = executor.map_array(launcher, *zip(*[(list(o), "hydra.sweep.dir", idx, f"job_id_for_{idx}",
                                                Singleton.get_state()) for idx, o in numbered]))
    states = wait_for_jobs(jobs)
    return [job_return(launcher, job, states.get(job.job_id, ""), idx, list(o))
            for job, (idx, o) in zip(jobs, numbered)]


def executor_params(params: dict[str, Any]) -> dict[str, Any]:
    """submitit's update_parameters() arguments from hydra.launcher.* (the names all executors
    share as they are, the others slurm_-prefixed). `gpus_per_task` (sbatch --gpus-per-task: each
    task gets its own GPU, as cuda:0) replaces the preset's one GPU per task on the node.

    >>> executor_params({"tasks_per_node": 2, "gpus_per_node": 2, "gpus_per_task": 1})
    {'tasks_per_node': 2, 'slurm_gpus_per_task': 1}
    """
    common = set(OmegaConf.structured(BaseQueueConf).keys())
    if params.get("gpus_per_task"):
        params = {k: v for k, v in params.items() if k != "gpus_per_node"}
    return {k if k in common else f"slurm_{k}": v for k, v in params.items()}


def job_return(launcher: Any, job: Any, state: str, num: int, overrides: list[str]) -> JobReturn:
    """The job's own result (rank 0's); for a job that left none, a failure recorded in its run dir."""
    if job.paths.result_pickle.exists():
        try:
            ret = job.task(0).result()
        except Exception as err:  # the job raised outside the task (submitit's own errors)
            message = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        else:
            name_logs(Path(str(ret.hydra_cfg.hydra.runtime.output_dir)), job)
            return ret
    else:
        message = f"SLURM job {job.job_id} ended {state or 'without a trace in squeue'} and left no result"
    message += f"; logs: {job.paths.stdout} {job.paths.stderr}"
    log.error(f"job #{num} failed: {message}")
    cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, overrides)
    with open_dict(cfg.hydra.job):
        cfg.hydra.job.num = num
    runs.record_failure(Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir), cfg, message)
    ret = JobReturn(overrides=overrides, task_name="train", status=JobStatus.COMPLETED)
    ret.return_value = None  # what vitcli returns for a failed sweep job: the sweep goes on
    return ret


def name_logs(run_dir: Path, job: Any) -> None:
    """A sweep point that failed before training started (a bad override) has no "slurm" entry
    in its summary.json yet: give it its job's log files, which sweep_summary.csv names."""
    summary = runs.read_summary(run_dir)
    if summary and summary.get("status") != "completed" and "slurm" not in summary:
        slurm = {"job_id": job.job_id, "requeues": 0, "logs": [str(job.paths.stdout), str(job.paths.stderr)]}
        write_json(run_dir / runs.SUMMARY, {**summary, "slurm": slurm})


def run_task(call: Callable[..., JobReturn], *args: Any) -> JobReturn:
    """In the job, around the sweep point's task: SLURM's warning signal only raises vitcli's stop
    flag, which training acts on at its next step (submitit's own handler would requeue at once,
    in the middle of start-up, with nothing saved, and the job's result would say it failed)."""
    with interrupts.stop_requests((signal.SIGUSR2,)):
        return call(*args)


def wait_for_jobs(jobs: Sequence[Any], poll_s: float = 2.0) -> dict[str, str]:
    """Block until every job has written its result or SLURM has ended it; the last squeue state of each."""
    states: dict[str, str] = {}
    ended_at: dict[str, float] = {}
    waiting = {job.job_id: job for job in jobs}
    while waiting:
        seen = queue_states(list(waiting))
        now = time.time()
        for job_id, job in list(waiting.items()):
            if seen is None:  # squeue did not answer (slurmctld restarting): only a result ends the wait
                if job.paths.result_pickle.exists():
                    del waiting[job_id]
                continue
            state = seen.get(job_id, "")
            states[job_id] = state or states.get(job_id, "")
            if job.paths.result_pickle.exists():
                del waiting[job_id]
            elif state and state not in ENDED:
                ended_at.pop(job_id, None)  # pending again after a requeue, or running
            elif now - ended_at.setdefault(job_id, now) > RESULT_GRACE_S:
                del waiting[job_id]
        if waiting:
            time.sleep(poll_s)
    return states
