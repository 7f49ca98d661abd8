"""Data-parallel training: torch DDP in processes started by torchrun.

`vitcli train trainer.devices=N` re-launches itself through torch.distributed.run
with N processes on this node, all writing into the one run directory Hydra made;
`torchrun --nnodes ... -m vitcli train ...` runs the same code directly. Each rank
trains on its shard of the seeded epoch order (DistributedSampler semantics),
evaluates its disjoint shard and all-reduces the counts, so every sample counts
once. Only rank 0 writes files, logs and draws a progress bar.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from vitcli.errors import UserError

log = logging.getLogger("vitcli")

PEER_FAILED = "stopped because another rank of the job failed"


class PeerFailed(UserError):
    """This rank was stopped (SIGTERM from torchrun, or a broken collective) after another one failed."""


class RanksFailed(UserError):
    """A relaunched job ended with a failed rank (its error is the message)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


RELAUNCHED = "VITCLI_DDP_RELAUNCHED"  # set by `vitcli train trainer.devices=N` for its ranks


# ---- who am I -----------------------------------------------------------------
def under_launcher() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1)) if under_launcher() else 1


def rank() -> int:
    return int(os.environ.get("RANK", 0)) if under_launcher() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0)) if under_launcher() else 0


def is_main() -> bool:
    return rank() == 0


def _initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


# ---- launching (the parent `vitcli train trainer.devices=N`) ----------------------------
def needs_relaunch(cfg: Any) -> bool:
    devices = int(cfg.trainer.devices)
    if devices < 1:
        raise UserError(f"trainer.devices={devices} must be at least 1")
    return devices > 1 and not under_launcher()


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
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    devices = int(cfg.trainer.devices)
    uses_cuda(cfg.trainer.device, devices)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // devices)))
    os.environ[RELAUNCHED] = "1"  # ranks leave their errors to this process (one line, below)
    for name in ("torch.distributed.elastic", "torch.distributed.run", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # the agent's own warnings would repeat it
    args = launcher_args(devices, child_overrides(task, hydra, run_dir))
    log.info(f"launching {devices} processes with torchrun (python -m torch.distributed.run "
             f"{' '.join(args[:2])} -m vitcli train ...); run dir {run_dir}")
    from vitcli.runs import read_summary

    try:
        run(get_args_parser().parse_args(args))
    except ChildFailedError as err:
        failed = ranks_failed(err.failures, devices)
        record_root_cause(run_dir, str(failed))
        raise failed from None
    finally:
        os.environ.pop(RELAUNCHED, None)
    best = read_summary(run_dir).get("best") or {}
    return float(best.get("val_top1", math.nan))


def record_root_cause(run_dir: Path, message: str) -> None:
    """Rank 0 may have recorded only "another rank failed"; summary.json gets the real error."""
    from vitcli.runs import SUMMARY, read_summary
    from vitcli.tracking import write_json

    summary = read_summary(run_dir)
    if summary and summary.get("status") in ("running", "failed"):
        write_json(run_dir / SUMMARY, {**summary, "status": "failed", "error": message})


def ranks_failed(failures: dict[int, Any], devices: int) -> RanksFailed:
    """The root cause among failed ranks: one that did not fail because another one did."""
    items = sorted(failures.items(), key=lambda kv: (PEER_FAILED in str(kv[1].message), kv[1].timestamp, kv[0]))
    rank_, failure = items[0]
    code = failure.exitcode
    if code < 0:
        message = f"rank {rank_} of {devices} was killed by {failure.signal_name()} (out of memory?); the job stopped"
    elif failure.error_file_data.get("vitcli"):
        message = str(failure.message)
    else:
        message = f"rank {rank_} of {devices} failed with exit code {code}: {str(failure.message).splitlines()[0]}"
    return RanksFailed(message, 128 - code if code < 0 else code)


def record_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Under torchrun, write this rank's error as one line into torchrun's error file (the
    parent prints it), and end a rank stopped by another rank's failure quietly."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            if world_size() == 1:
                raise
            peer = isinstance(err, PeerFailed) or _is_broken_collective(err)
            text = PEER_FAILED if peer else (str(err).splitlines() or [type(err).__name__])[0]
            if not isinstance(err, UserError) and not peer:
                text = f"{type(err).__name__}: {text}"
            _write_error_file(f"rank {rank()}: {text}" if rank() else text)
            if peer or (isinstance(err, UserError) and os.environ.get(RELAUNCHED)):
                sys.exit(2)  # the parent (or the failing rank) says it, once
            raise

    return wrapper


def _is_broken_collective(err: BaseException) -> bool:
    import torch.distributed as dist

    text = str(err)
    return isinstance(err, getattr(dist, "DistError", ())) or "Connection closed by peer" in text \
        or "Connection reset by peer" in text


def _write_error_file(message: str) -> None:
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        with open(path, "w") as f:
            json.dump({"message": message, "timestamp": int(time.time()), "vitcli": True}, f)


# ---- the process group (each rank) ------------------------------------------------------
@contextlib.contextmanager
def process_group(device_name: str) -> Iterator[None]:
    """Join the job's process group (NCCL on GPUs, gloo on CPU) when started by torchrun."""
    if world_size() == 1:
        yield
        return
    import torch
    import torch.distributed as dist

    cuda = uses_cuda(device_name, int(os.environ.get("LOCAL_WORLD_SIZE", world_size())))
    if cuda:
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    if not is_main():
        log.setLevel(logging.WARNING)
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        dist.destroy_process_group()


def uses_cuda(device_name: str, per_node: int) -> bool:
    """Whether the ranks run on GPUs (one each), checking this node has that many."""
    import torch

    from vitcli.engine.trainer import resolve_device

    if resolve_device(device_name).type != "cuda":
        return False
    if per_node > torch.cuda.device_count():
        raise UserError(f"{per_node} processes on this node need {per_node} GPUs but {torch.cuda.device_count()} "
                        "are visible; lower trainer.devices (or --nproc-per-node), or use trainer.device=cpu")
    return True


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    raise PeerFailed(PEER_FAILED)


def shared_run_dir(run_dir: Path) -> Path:
    """Rank 0's run dir on every rank (direct torchrun: each rank resolved its own timestamp)."""
    if not _initialized():
        return run_dir
    import torch.distributed as dist

    box = [str(run_dir)]
    dist.broadcast_object_list(box, src=0)
    shared = Path(box[0])
    if shared.resolve() != run_dir.resolve() and run_dir.is_dir():
        leftovers = {p.name for p in run_dir.iterdir()}
        if leftovers <= {".hydra", "train.log"}:  # only what Hydra made for this rank
            import shutil

            shutil.rmtree(run_dir, ignore_errors=True)
    return shared


def rank_device(device: Any) -> Any:
    """cuda -> cuda:LOCAL_RANK under DDP (one GPU per process)."""
    import torch

    if world_size() > 1 and device.type == "cuda":
        return torch.device("cuda", local_rank())
    return device


# ---- model, data, numbers ---------------------------------------------------------------
def wrap_model(model: Any, device: Any, tcfg: Any) -> Any:
    """DDP around the model (its own state dict keys stay unwrapped); SyncBatchNorm when asked."""
    if world_size() == 1 or not _initialized():
        return model
    import torch
    from torch.nn.parallel import DistributedDataParallel

    if tcfg.sync_batchnorm:
        if device.type == "cpu":
            raise UserError("trainer.sync_batchnorm=true needs GPUs (torch's SyncBatchNorm does not run on CPU); "
                            "drop it for trainer.device=cpu")
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # replaces the BN layers inside, same parameters
    # frozen backbone epochs leave parameters without gradients, which DDP must be told about
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=tcfg.freeze_backbone_epochs > 0)


def shard_data(data: Any, cfg: Any) -> None:
    """Each rank takes its shard of every split: train padded (equal step counts), eval splits not."""
    world = world_size()
    data.info["devices"] = world
    data.info["global_batch_size"] = cfg.data.batch_size * world * cfg.trainer.grad_accum
    if world == 1:
        return
    for split, loader in data.loaders.items():
        loader.shard(rank(), world, pad=split == "train")


def seed_rank(seed: int) -> None:
    """Different dropout / MixUp draws per rank, after the model was built identically everywhere."""
    if world_size() > 1:
        from vitcli.engine.trainer import seed_everything

        seed_everything(seed + rank())


def mean_item(value: Any) -> float:
    """The mean of a scalar tensor over ranks (so all ranks see the same non-finite loss and stop together)."""
    if world_size() == 1 or not _initialized():
        return value.item()
    import torch.distributed as dist

    value = value.detach().float().clone()
    dist.all_reduce(value)
    return value.item() / world_size()


def evaluate(model: Any, loader: Any, device: Any, **kwargs: Any) -> dict[str, Any]:
    """vitcli.engine.evaluate.evaluate over this rank's shard, with counts and sums all-reduced."""
    from vitcli.engine.evaluate import evaluate as evaluate_shard
    from vitcli.engine.evaluate import metrics_from_sums

    out = evaluate_shard(model, loader, device, **kwargs)
    if world_size() == 1 or not _initialized():
        return out
    import torch
    import torch.distributed as dist

    sums = torch.tensor(out["sums"], dtype=torch.float64, device=device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(sums)
    return {**out, **metrics_from_sums(sums), "sums": sums.tolist()}


def scale_lr(cfg: Any) -> None:
    """optimizer.lr_base set: lr = lr_base x (global batch / lr_base_size), linearly or by sqrt (timm's rule)."""
    opt, world = cfg.optimizer, world_size()
    global_batch = cfg.data.batch_size * world * cfg.trainer.grad_accum
    batch = f"global batch {global_batch} = {cfg.data.batch_size} per device x {world} device(s) x " \
            f"{cfg.trainer.grad_accum} accumulation step(s)"
    if opt.lr_base is None:
        log.info(f"{batch}; lr {opt.lr:.3g}")
        return
    if opt.lr_base_scale not in ("linear", "sqrt"):
        raise UserError(f"optimizer.lr_base_scale={opt.lr_base_scale} is not one of linear, sqrt")
    if opt.lr_base_size <= 0:
        raise UserError(f"optimizer.lr_base_size={opt.lr_base_size} must be positive")
    ratio = global_batch / opt.lr_base_size
    opt.lr = float(opt.lr_base * (math.sqrt(ratio) if opt.lr_base_scale == "sqrt" else ratio))
    log.info(f"{batch}; lr {opt.lr:.3g} = lr_base {opt.lr_base:.3g} x {opt.lr_base_scale}"
             f"({global_batch}/{opt.lr_base_size})")


class SilentMetrics:
    """What ranks other than 0 log: nothing (rank 0 writes metrics, W&B and the summary)."""

    def __init__(self) -> None:
        self.jsonl = self.csv = Path(os.devnull)
        self.wandb = None

    def log(self, record: dict[str, Any]) -> None:
        pass

    log_epoch = log

    def finish(self, summary: dict[str, Any]) -> None:
        pass

    def truncate_after(self, epoch: int, step: int) -> None:
        pass


def metrics_logger(run_dir: Path, cfg: Any) -> Any:
    from vitcli.tracking import MetricsLogger

    return MetricsLogger(run_dir, cfg) if is_main() else SilentMetrics()
