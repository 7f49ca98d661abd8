"""Launching data-parallel training: `vitcli train trainer.devices=N` relaunches itself
through torch.distributed.run with N processes on this node, all writing into the one
run directory Hydra made; `torchrun --nnodes ... -m vitcli train ...` runs the same code
directly. A failed rank becomes one line in the parent (its exit code kept); ranks
stopped because another one failed stay quiet.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as torch_dist
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import get_args_parser, run

from vitcli.core import dist, runs
from vitcli.core.errors import UserError
from vitcli.core.io import write_json
from vitcli.core.runtime import rank_gpu, resolve_device
from vitcli.launch import comm
from vitcli.launch.interrupts import STOP_SIGNALS, TrainingInterrupted
from vitcli.launch.requeue import INTERRUPTED, REQUEUED, StopPlan
from vitcli.launch.slurm import DERIVED

log = logging.getLogger("vitcli")

RELAUNCHED = "VITCLI_DDP_RELAUNCHED"  # set by `vitcli train trainer.devices=N` for its ranks


class RanksFailed(UserError):
    """A relaunched job ended with a failed rank (its error is the message)."""
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def check_devices(cfg: Any, slurm_task: Any) -> None:
    """srun's tasks are the ranks already; trainer.devices=N would start N more per task."""
    if slurm_task is not None and int(cfg.trainer.devices) > 1:
        raise UserError(f"trainer.devices={cfg.trainer.devices} inside an srun step of {slurm_task.world_size} "
                        "tasks: each SLURM task is already one rank; drop trainer.devices (ask SLURM for "
                        "--ntasks-per-node instead)")


def takes_run_lock() -> bool:
    """The process that holds the run dir's lock: rank 0 of srun's tasks or of a direct torchrun,
    or the `trainer.devices=N` parent (its ranks run under its lock)."""
    return dist.rank() == 0 and not os.environ.get(RELAUNCHED)


def needs_relaunch(cfg: Any) -> bool:
    devices = int(cfg.trainer.devices)
    if devices < 1:
        raise UserError(f"trainer.devices={devices} must be at least 1")
    return devices > 1 and not dist.under_launcher()


def child_overrides(task: list[str], hydra: list[str], run_dir: Path) -> list[str]:
    """The command line of each rank: the same overrides, the same (already created) run dir."""
    dropped = ("hydra.run.dir", "hydra.output_subdir", "hydra.mode", "hydra.sweep", "hydra/launcher",
               "hydra/sweeper", "hydra.launcher", "hydra.sweeper", "hydra.job.num", "hydra.job.id")
    keep = [o for o in hydra if not o.lstrip("+~").startswith(dropped)]
    quoted = str(run_dir.resolve()).replace("\\", "\\\\").replace("'", "\\'")
    # the parent already wrote .hydra/; the ranks must not race to rewrite it
    return [*task, *keep, f"hydra.run.dir='{quoted}'", "hydra.output_subdir=null"]


def launcher_args(devices: int, overrides: list[str]) -> list[str]:
    return ["--standalone", f"--nproc-per-node={devices}", "--local-ranks-filter=0",  # others report via error files
            "--module", "vitcli", "train", *overrides]


def relaunch(cfg: Any, run_dir: Path, task: list[str], hydra: list[str]) -> float:
    """Run this training as `python -m torch.distributed.run --nproc-per-node N -m vitcli train ...`
    (in this process, so a failure becomes one line); returns the run's best val_top1."""

    devices = int(cfg.trainer.devices)
    uses_cuda(cfg.trainer.device, devices)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // devices)))
    os.environ[RELAUNCHED] = "1"  # ranks leave their errors to this process (one line, below)
    for name in ("torch.distributed.elastic", "torch.distributed.run", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # the agent's own warnings would repeat it
    args = launcher_args(devices, child_overrides(task, hydra, run_dir))
    log.info(f"launching {devices} processes with torchrun (python -m torch.distributed.run "
             f"{' '.join(args[:2])} -m vitcli train ...); run dir {run_dir}")
    try:
        run(get_args_parser().parse_args(args))
    except ChildFailedError as err:
        signals = [f.exitcode - 128 for f in err.failures.values() if f.exitcode - 128 in STOP_SIGNALS]
        stopped = stopped_run(run_dir, max(signals, default=0))
        if stopped is not None:
            raise stopped from None
        failed = ranks_failed(err.failures, devices)
        record_root_cause(run_dir, str(failed))
        raise failed from None
    except SignalException as err:  # torchrun handed this process's signal on to the ranks, which saved
        raise stopped_run(run_dir, int(err.sigval)) or err from None
    finally:
        os.environ.pop(RELAUNCHED, None)
    stopped = stopped_run(run_dir, 0)  # the ranks left quietly: rank 0 handed the job back to SLURM
    if stopped is not None:
        raise stopped
    best = runs.read_summary(run_dir).get("best") or {}
    return float(best.get("val_top1", math.nan))


def stopped_run(run_dir: Path, signum: int) -> TrainingInterrupted | None:
    """The ranks stopped for a signal (a rank's exit code is 128 + the signal; torchrun may
    SIGTERM the others as they exit) after rank 0 saved the run (summary.json says so), or left
    quietly (signum 0) once rank 0 had SLURM requeue the job: an interrupt, reported once here as
    for one process. None when they failed or completed."""
    summary = runs.read_summary(run_dir)
    status = summary.get("status")
    if not (status == REQUEUED or (status == INTERRUPTED and signum in STOP_SIGNALS)):
        return None
    stop = TrainingInterrupted(signum or signal.SIGTERM, f"at step {summary.get('global_step')}")
    stop.plan = StopPlan(status)
    return stop


def record_root_cause(run_dir: Path, message: str) -> None:
    """Rank 0 may have recorded only "another rank failed"; summary.json gets the real error."""
    summary = runs.read_summary(run_dir)
    if summary and summary.get("status") in ("running", "failed"):
        write_json(run_dir / runs.SUMMARY, {**summary, "status": "failed", "error": message})


def ranks_failed(failures: dict[int, Any], devices: int) -> RanksFailed:
    """The root cause among failed ranks: one that said why (vitcli's error file) and did not fail
    because another one did; a rank stopped by torchrun after writing its error still counts."""

    def said_why(failure: Any) -> bool:
        return bool(failure.error_file_data.get("vitcli")) and bool(str(failure.message))

    items = sorted(failures.items(), key=lambda kv: (comm.PEER_FAILED in str(kv[1].message), not said_why(kv[1]),
                                                     kv[1].timestamp, kv[0]))
    rank_, failure = items[0]
    code = failure.exitcode
    if said_why(failure):
        return RanksFailed(str(failure.message), code if code > 0 else 2)
    if code < 0:
        return RanksFailed(f"rank {rank_} of {devices} was killed by {failure.signal_name()} (out of memory?); "
                           "the job stopped", 128 - code)
    return RanksFailed(f"rank {rank_} of {devices} failed with exit code {code}: "
                       f"{str(failure.message).splitlines()[0]}", code)


def record_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Under torchrun, write this rank's error as one line into torchrun's error file (the
    parent prints it), and end a rank stopped by another rank's failure quietly."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TrainingInterrupted:
            raise  # a stop, not a failure: rank 0 reports it
        except Exception as err:
            if dist.world_size() == 1:
                raise
            peer = isinstance(err, comm.PeerFailed) or _is_broken_collective(err)
            text = comm.PEER_FAILED if peer else (str(err).splitlines() or [type(err).__name__])[0]
            if not isinstance(err, UserError) and not peer:
                text = f"{type(err).__name__}: {text}"
            _write_error_file(f"rank {dist.rank()}: {text}" if dist.rank() else text)
            if peer or (isinstance(err, UserError) and os.environ.get(RELAUNCHED)):
                sys.exit(2)  # the parent (or the failing rank) says it, once
            raise

    return wrapper


def _is_broken_collective(err: BaseException) -> bool:

    text = str(err)
    return isinstance(err, getattr(torch_dist, "DistError", ())) or "Connection closed by peer" in text \
        or "Connection reset by peer" in text


def _write_error_file(message: str) -> None:
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        with open(path, "w") as f:
            json.dump({"message": message, "timestamp": int(time.time()), "vitcli": True}, f)


def uses_cuda(device_name: str, per_node: int | None = None) -> bool:
    """Whether the ranks run on GPUs (one each), checking there is one for each: for the `per_node`
    processes about to start on this node (trainer.devices=N), or for this rank (core/runtime.py's
    rank_gpu: its own among the node's, or the one SLURM gave its task)."""
    if resolve_device(device_name).type != "cuda":
        return False
    if per_node is None:
        rank_gpu(torch.cuda.device_count())
    elif per_node > torch.cuda.device_count():
        raise UserError(f"{per_node} processes on this node need {per_node} GPUs but {torch.cuda.device_count()} "
                        "are visible; lower trainer.devices (or --nproc-per-node), or use trainer.device=cpu")
    return True


@contextlib.contextmanager
def rank_session(device_name: str, slurm_task: Any = None) -> Iterator[None]:
    """This rank inside the job's process group (a no-op for a single process). An srun step's
    tasks meet on a port SLURM reserved or VITCLI_MASTER_PORT, else at comm.step_store."""
    cuda = dist.world_size() > 1 and uses_cuda(device_name)
    meet = dist.world_size() > 1 and slurm_task is not None and slurm_task.port_source == DERIVED
    with comm.step_store(slurm_task) if meet else contextlib.nullcontext() as store, comm.process_group(cuda, store):
        if slurm_task is not None and dist.world_size() > 1:
            log.info(f"SLURM step {slurm_task.job_id}.{slurm_task.step_id}: {slurm_task.world_size} tasks as DDP "
                     f"ranks, master {slurm_task.master_addr}:{os.environ.get('MASTER_PORT')} "
                     f"({slurm_task.port_source})")
        yield
