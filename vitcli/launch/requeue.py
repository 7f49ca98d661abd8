"""What a stopped run asks of SLURM: requeue the job, or let it end.

A signal stops training at a step boundary (launch/interrupts.py). `plan_stop` then asks
`scontrol` what SLURM is doing with the job: requeueing it itself (preemption, `scontrol
requeue`: the restart count went up), ending it at its time limit or warning of that limit
(SIGUSR2 while it runs: then vitcli requeues it), or cancelling it (`scancel`: the run is
interrupted for good). Rank 0 writes the plan's status into summary.json, and `hand_back()`
hands the job back: through submitit's checkpoint protocol when submitit started it (its
max_num_timeout applies), else `scontrol requeue $SLURM_JOB_ID`. The requeued job runs the same
command, finds checkpoints/last.pt in the same run dir and resumes.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from vitcli.core import runs
from vitcli.core.io import write_json
from vitcli.launch import interrupts
from vitcli.launch.slurm import job_id, restarts, show_job

log = logging.getLogger("vitcli")

WARNING_SIGNAL = signal.SIGUSR2  # sbatch --signal=USR2@<s>: submitit's default, and docs/slurm/train.sbatch's
REQUEUED = "requeued"
INTERRUPTED = "interrupted"


class JobRequeued(SystemExit):
    """This process ends because SLURM runs the job again (its last.pt is saved); never a failure."""


@dataclass(frozen=True)
class StopPlan:
    """What happens to a stopped run.

    Args:
        status: summary.json's status: "requeued" (SLURM runs the job again) or "interrupted".
        requeue_here: this process must requeue the job (time limit or its warning); otherwise
            SLURM requeues it itself (preemption, `scontrol requeue`) or nobody does.
        requeues: the job's requeue count once this stop is through.
        why: one line for the log.
    """

    status: str
    requeue_here: bool = False
    requeues: int = 0
    why: str = ""


def plan_stop(signum: int, env: Mapping[str, str] = os.environ,
              show: Callable[[str], dict[str, str]] = show_job) -> StopPlan:
    """Decide from the job's state in SLURM whether a run stopped by `signum` is requeued.

    >>> plan_stop(signal.SIGTERM, {}).status
    'interrupted'
    """
    done = restarts(env)
    job = env.get("SLURM_JOB_ID")
    if not job or signum == signal.SIGINT:
        return StopPlan(INTERRUPTED, requeues=done)
    fields = show(job)
    if not fields:
        return StopPlan(INTERRUPTED, requeues=done, why=f"scontrol does not know job {job}")
    if int(fields.get("Restarts") or 0) > done:
        return StopPlan(REQUEUED, requeues=done + 1, why="SLURM requeued the job (preemption or scontrol requeue)")
    if fields.get("BatchFlag") == "0":
        return StopPlan(INTERRUPTED, requeues=done, why="not a batch job (SLURM requeues only sbatch jobs)")
    if fields.get("Requeue") == "0":
        return StopPlan(INTERRUPTED, requeues=done, why="the job was submitted with --no-requeue")
    if fields.get("Reason") == "TimeLimit":
        return StopPlan(REQUEUED, True, done + 1, "the job reached its time limit")
    if fields.get("JobState") == "RUNNING" and signum in (signal.SIGTERM, WARNING_SIGNAL):
        return StopPlan(REQUEUED, True, done + 1, f"{signal.Signals(signum).name} while the job runs "
                                                  "(SLURM's time-limit warning or preemption)")
    return StopPlan(INTERRUPTED, requeues=done, why=f"the job is {fields.get('JobState', 'ending').lower()}")


def _submitit_handler() -> Callable[[int, Any], Any] | None:
    """submitit's own handler of its preemption signal, in a job submitit started (else None)."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return None
    handler = interrupts.handler_before(WARNING_SIGNAL)
    return handler if callable(handler) and type(getattr(handler, "__self__", None)).__name__ == "SignalHandler" \
        else None


def hand_back(plan: StopPlan, run_dir: Path) -> StopPlan:
    """On rank 0, once last.pt and summary.json are written: ask SLURM to run the job again when
    this process must (time limit, its warning), through submitit's checkpoint protocol when
    submitit started the job, else `scontrol requeue $SLURM_JOB_ID`. Returns the plan, or, when
    SLURM refused, an interrupted one (summary.json then says why). Never raises: the other
    ranks wait for its answer."""
    if plan.status != REQUEUED or not plan.requeue_here:
        return plan
    job = os.environ.get("SLURM_JOB_ID", "")
    handler = _submitit_handler()
    if handler is not None:
        # submitit's checkpoint protocol: launcher.checkpoint() -> the same job pickled again,
        # `scontrol requeue`, sys.exit(-1); past max_num_timeout it raises UncompletedJobError
        try:
            handler(WARNING_SIGNAL, None)
        except SystemExit:
            pass
        except Exception as err:
            return _not_requeued(plan, run_dir, str(err) or type(err).__name__)
        return plan
    try:
        out = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return _not_requeued(plan, run_dir, f"scontrol requeue {job} failed: {err}")
    if out.returncode != 0:
        return _not_requeued(plan, run_dir, f"scontrol requeue {job} failed: {(out.stderr or out.stdout).strip()}")
    return plan


def _not_requeued(plan: StopPlan, run_dir: Path, message: str) -> StopPlan:
    log.error(f"the job was not requeued: {message}")
    mark_not_requeued(run_dir, message)
    return StopPlan(INTERRUPTED, requeues=plan.requeues - 1, why=message)


def leave_if_requeued(plan: StopPlan | None, run_dir: Path) -> None:
    """JobRequeued (the process ends quietly, exit status 0) when SLURM runs the job again;
    a no-op for an interrupted run, outside SLURM, and without a plan."""
    if plan is None or plan.status != REQUEUED:
        return
    log.info(f"SLURM job {job_id()} requeued ({plan.why}); it resumes {run_dir} from its last.pt")
    interrupts.leave_quietly()
    raise JobRequeued(0)


def mark_not_requeued(run_dir: Path, message: str) -> None:
    """The run was marked requeued, but SLURM will not run it again: say so in summary.json."""
    summary = runs.read_summary(run_dir)
    if summary:
        write_json(Path(run_dir) / runs.SUMMARY, {**summary, "status": INTERRUPTED,
                                                   "error": f"not requeued: {message.splitlines()[0]}"})
