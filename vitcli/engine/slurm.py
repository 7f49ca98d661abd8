"""SLURM: a job step's tasks as the ranks of one DDP run, and what a stopped run asks of SLURM.

Ranks. `srun` starts one process per task and tells each who it is; `join_tasks_as_ranks()`
turns that into torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
MASTER_ADDR, MASTER_PORT), the rules of submitit's TorchDistributedEnvironment and Lightning's
SLURMEnvironment, read per job step (SLURM_STEP_*) so a batch script with --ntasks=4 that runs
`vitcli train` without srun stays one process instead of waiting for three ranks that never come.

Stops. A signal stops training at a step boundary (engine/interrupts.py); `plan_stop` then asks
`scontrol` what SLURM is doing with the job: requeueing it itself (preemption, `scontrol
requeue`), ending it at its time limit or warning of that limit (then vitcli requeues it), or
cancelling it. `requeue()` hands the job back: through submitit's checkpoint protocol when
submitit started it (its max_num_timeout applies), else `scontrol requeue $SLURM_JOB_ID`.
The requeued job runs the same command, finds checkpoints/last.pt in the same run dir and resumes.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import signal
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

log = logging.getLogger("vitcli")

WARNING_SIGNAL = signal.SIGUSR2  # sbatch --signal=USR2@<s>: submitit's default, and docs/slurm/train.sbatch's
REQUEUED = "requeued"
INTERRUPTED = "interrupted"


class JobRequeued(SystemExit):
    """This process ends because SLURM runs the job again (its last.pt is saved); never a failure."""


# ---- ranks ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SlurmTask:
    """One task of a multi-task `srun` step, as a DDP rank.

    >>> task = step_task({"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_PROCID": "3",
    ...                   "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_STEP_NUM_TASKS": "4",
    ...                   "SLURM_STEP_NUM_NODES": "2", "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
    ...                   "SLURM_STEP_NODELIST": "gpu[07-08]"})
    >>> task.rank, task.local_rank, task.world_size, task.local_world_size, task.master_addr
    (3, 1, 4, 2, 'gpu07')
    """

    job_id: str
    step_id: str
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    node_rank: int
    num_nodes: int
    master_addr: str
    master_port: int

    def torch_env(self) -> dict[str, str]:
        """The variables torch.distributed's env:// rendezvous reads (as torchrun sets them)."""
        return {"RANK": str(self.rank), "WORLD_SIZE": str(self.world_size), "LOCAL_RANK": str(self.local_rank),
                "LOCAL_WORLD_SIZE": str(self.local_world_size), "GROUP_RANK": str(self.node_rank),
                "MASTER_ADDR": self.master_addr, "MASTER_PORT": str(self.master_port)}


def step_task(env: Mapping[str, str] = os.environ) -> SlurmTask | None:
    """This process as one of several tasks of an srun step; None in a batch script, a one-task
    step or outside SLURM."""
    if "SLURM_STEP_ID" not in env or "SLURM_PROCID" not in env:
        return None
    world = int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or 1)
    if world < 2:
        return None
    node = int(env.get("SLURM_NODEID", 0))
    per_node = tasks_per_node(env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE") or str(world))
    job, step = env.get("SLURM_JOB_ID", "0"), env.get("SLURM_STEP_ID", "0")
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "localhost"
    return SlurmTask(
        job_id=job, step_id=step, rank=int(env["SLURM_PROCID"]), local_rank=int(env.get("SLURM_LOCALID", 0)),
        world_size=world, local_world_size=per_node[node] if node < len(per_node) else per_node[-1],
        node_rank=node, num_nodes=int(env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_JOB_NUM_NODES") or 1),
        master_addr=first_host(nodelist), master_port=int(env.get("MASTER_PORT") or master_port(job, step)),
    )


def tasks_per_node(spec: str) -> list[int]:
    """SLURM's compressed tasks-per-node list, one entry per node.

    >>> tasks_per_node("2(x3),1")
    [2, 2, 2, 1]
    """
    counts: list[int] = []
    for part in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if m:
            counts += [int(m.group(1))] * int(m.group(2) or 1)
    return counts or [1]


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list (rank 0 runs there).

    >>> first_host("gpu[007-009,012],cpu1")
    'gpu007'
    """
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not m:
        return nodelist
    prefix, ranges = m.group(1), m.group(2)
    return prefix + ranges.split(",")[0].split("-")[0] if ranges else prefix


def master_port(job_id: str, step_id: str = "0") -> int:
    """A port in 20000-59999 fixed by the job and step, so every rank (and every requeue) agrees on it."""
    return 20000 + zlib.crc32(f"{job_id}.{step_id}".encode()) % 40000


def join_tasks_as_ranks(env: dict[str, str] | Any = os.environ) -> SlurmTask | None:
    """Under `srun --ntasks=N`, export this task's rank for torch.distributed; a no-op under
    torchrun (which set RANK itself) or outside a multi-task step."""
    if "RANK" in env and "WORLD_SIZE" in env:
        return None
    task = step_task(env)
    if task is not None:
        env.update(task.torch_env())
    return task


# ---- the job ----------------------------------------------------------------------------------
def job_id(env: Mapping[str, str] = os.environ) -> str | None:
    """The job as squeue names it (array tasks as <array job>_<index>); None outside SLURM."""
    if "SLURM_JOB_ID" not in env:
        return None
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env["SLURM_JOB_ID"]


def restarts(env: Mapping[str, str] = os.environ) -> int:
    """How often SLURM has requeued this job so far."""
    return int(env.get("SLURM_RESTART_COUNT") or 0)


def show_job(job: str) -> dict[str, str]:
    """`scontrol show job -o JOB` as a dict ({} when scontrol is missing or the job is gone)."""
    try:
        out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if out.returncode != 0:
        return {}
    return dict(re.findall(r"(\w+)=(\S*)", out.stdout.splitlines()[0] if out.stdout else ""))


@functools.lru_cache(maxsize=1)
def _log_files(job: str) -> tuple[str, ...]:
    fields = show_job(job)
    return tuple(dict.fromkeys(p for p in (fields.get("StdOut"), fields.get("StdErr")) if p and p != "/dev/null"))


def log_files(env: Mapping[str, str] = os.environ) -> list[str]:
    """The job's output and error files (asked of scontrol once per process)."""
    job = env.get("SLURM_JOB_ID")
    return list(_log_files(job)) if job else []


def summary_fields(requeues: int | None = None, env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """summary.json's "slurm" entry for a run trained in a SLURM job ({} outside one)."""
    job = job_id(env)
    if job is None:
        return {}
    return {"slurm": {"job_id": job, "requeues": restarts(env) if requeues is None else requeues,
                      "logs": log_files(env)}}


# ---- stopping -----------------------------------------------------------------------------------
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
    handler = signal.getsignal(WARNING_SIGNAL)
    return handler if callable(handler) and type(getattr(handler, "__self__", None)).__name__ == "SignalHandler" \
        else None


def requeue(plan: StopPlan, run_dir: Path) -> None:
    """Hand a stopped job back to SLURM once rank 0 has written last.pt and summary.json; raises
    JobRequeued (the process ends quietly) when the job runs again. Outside SLURM, a no-op."""
    if plan.status != REQUEUED:
        return
    job = os.environ.get("SLURM_JOB_ID", "")
    if plan.requeue_here:
        handler = _submitit_handler()
        if handler is not None:
            # submitit's checkpoint protocol: launcher.checkpoint() -> the same job pickled again,
            # `scontrol requeue`, sys.exit(-1); past max_num_timeout it raises UncompletedJobError
            try:
                handler(WARNING_SIGNAL, None)
            except SystemExit:
                pass
            except Exception as err:
                mark_not_requeued(run_dir, str(err))
                raise
        else:
            out = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
            if out.returncode != 0:
                message = f"scontrol requeue {job} failed: {(out.stderr or out.stdout).strip()}"
                mark_not_requeued(run_dir, message)
                raise RuntimeError(message)
    log.info(f"SLURM job {job_id()} requeued ({plan.why}); it resumes {run_dir} from its last.pt")
    raise JobRequeued(0)


def mark_not_requeued(run_dir: Path, message: str) -> None:
    """The run was marked requeued, but SLURM will not run it again: say so in summary.json."""
    from vitcli.core import runs
    from vitcli.core.io import write_json

    summary = runs.read_summary(run_dir)
    if summary:
        write_json(Path(run_dir) / runs.SUMMARY, {**summary, "status": INTERRUPTED,
                                                   "error": f"not requeued: {message.splitlines()[0]}"})
