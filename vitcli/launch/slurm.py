"""SLURM: a job step's tasks as the ranks of one DDP run, and what vitcli reads about its job.

Ranks. `srun` starts one process per task and tells each who it is; `join_tasks_as_ranks()`
turns that into torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
MASTER_ADDR, MASTER_PORT), the rules of submitit's TorchDistributedEnvironment and Lightning's
SLURMEnvironment, read per job step (SLURM_STEP_*) so a batch script with --ntasks=4 that runs
`vitcli train` without srun stays one process instead of waiting for three ranks that never come.

The master port: a port SLURM reserved for the step (`srun --resv-ports`, SLURM_STEP_RESV_PORTS),
else VITCLI_MASTER_PORT when the batch script sets it, else one of a few ports derived from the
job, step and requeue count in 20000-32767 (below Linux's ephemeral ports, which the kernel
hands out to outgoing connections), where rank 0 listens on the first it can bind and the others
find it (comm.py's step_store). MASTER_PORT in the environment is not used: sbatch exports the
submitting shell's variables, and one left there would give every job the same port.

The job: its id, requeue count, log files (scontrol) and queue state (squeue), for
summary.json and `vitcli runs`. What a stopped run asks of SLURM lives in launch/requeue.py.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import subprocess
import zlib
from dataclasses import dataclass
from typing import Any, Mapping

from vitcli.core.errors import UserError

log = logging.getLogger("vitcli")


# ---- ranks ----------------------------------------------------------------------------------
PORT_RANGE = (20000, 32768)  # Linux hands out 32768-60999 to outgoing connections (ip_local_port_range)
PORT_VARIABLE = "VITCLI_MASTER_PORT"  # a port chosen by hand, in the batch script
DERIVED = "derived"

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
    port_source: str = DERIVED  # "SLURM_STEP_RESV_PORTS", "VITCLI_MASTER_PORT" or DERIVED (rendezvous)

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
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "localhost"
    port, source = step_port(env)
    return SlurmTask(
        job_id=env.get("SLURM_JOB_ID", "0"), step_id=env.get("SLURM_STEP_ID", "0"), rank=int(env["SLURM_PROCID"]),
        local_rank=int(env.get("SLURM_LOCALID", 0)), world_size=world,
        local_world_size=per_node[node] if node < len(per_node) else per_node[-1], node_rank=node,
        num_nodes=int(env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_JOB_NUM_NODES") or 1),
        master_addr=first_host(nodelist), master_port=port, port_source=source,
    )


def step_port(env: Mapping[str, str]) -> tuple[int, str]:
    """The step's master port and where it came from (see the module doc).

    >>> step_port({"SLURM_STEP_RESV_PORTS": "12001-12003", "MASTER_PORT": "29500"})
    (12001, 'SLURM_STEP_RESV_PORTS')
    """
    reserved = re.match(r"\s*(\d+)", env.get("SLURM_STEP_RESV_PORTS") or "")
    if reserved:
        return int(reserved.group(1)), "SLURM_STEP_RESV_PORTS"
    chosen = (env.get(PORT_VARIABLE) or "").strip()
    if chosen:
        if not chosen.isdigit() or not 0 < int(chosen) < 65536:
            raise UserError(f"{PORT_VARIABLE}={chosen} is not a port number (1-65535)")
        return int(chosen), PORT_VARIABLE
    return candidate_ports(env)[0], DERIVED


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


def candidate_ports(env: Mapping[str, str], count: int = 8) -> list[int]:
    """The ports a step's rank 0 tries in turn, the same on every task: fixed by the job, the step
    and the requeue count (a requeued job does not meet its predecessor's sockets in TIME_WAIT), in
    PORT_RANGE, below the ephemeral ports.

    >>> ports = candidate_ports({"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0"})
    >>> len(set(ports)), all(PORT_RANGE[0] <= p < PORT_RANGE[1] for p in ports)
    (8, True)
    """
    key = f"{env.get('SLURM_JOB_ID', '0')}.{env.get('SLURM_STEP_ID', '0')}.{restarts(env)}"
    low, high = PORT_RANGE
    ports: list[int] = []
    for k in range(count * 4):
        port = low + zlib.crc32(f"{key}.{k}".encode()) % (high - low)
        if port not in ports:
            ports.append(port)
    return ports[:count]


def join_tasks_as_ranks(env: dict[str, str] | Any = os.environ) -> SlurmTask | None:
    """Under `srun --ntasks=N`, export this task's rank for torch.distributed; a no-op under
    torchrun (which set RANK itself) or outside a multi-task step."""
    if "RANK" in env and "WORLD_SIZE" in env:
        return None
    task = step_task(env)
    if task is None:
        return None
    inherited = env.get("MASTER_PORT")
    if inherited and inherited != str(task.master_port) and task.rank == 0:
        log.warning(f"MASTER_PORT={inherited} in the environment is not used (sbatch passes the submitting shell's "
                    f"variables on to every job); this step uses port {task.master_port} "
                    f"({task.port_source}); set {PORT_VARIABLE} in the batch script to choose one")
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


def queue_states(job_ids: list[str]) -> dict[str, str] | None:
    """{job id: state} from one squeue call (array tasks as <array>_<index>; jobs SLURM forgot are
    absent); None when squeue did not answer."""
    raw = sorted({j.split("_")[0] for j in job_ids})
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T", "-j", ",".join(raw)],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        return None
    pairs = (line.split("|", 1) for line in out.stdout.splitlines() if "|" in line)
    return {job.strip(): state.strip() for job, state in pairs}
