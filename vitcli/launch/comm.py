"""In-process communication between DDP ranks (torch.distributed, started by torchrun).

Joining the process group, wrapping the model in DDP, and sharing rank 0's run
directory. Who this process is (rank, world size) and the sum over ranks live in
core/dist.py; launching ranks lives in torchrun.py.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel

from vitcli.core import dist, runs
from vitcli.core.errors import UserError
from vitcli.core.runtime import rank_gpu

log = logging.getLogger("vitcli")

PEER_FAILED = "stopped because another rank of the job failed"


class PeerFailed(UserError):
    """This rank was stopped (SIGTERM from torchrun, or a broken collective) after another one failed."""


@contextlib.contextmanager
def process_group(cuda: bool, store: Any = None) -> Iterator[None]:
    """Join the job's process group (NCCL on GPUs, gloo on CPU) when started by torchrun or srun.

    Args:
        cuda: one GPU per rank (core/runtime.py's `rank_gpu` says which).
        store: where the ranks meet (launch/rendezvous.py, an srun step); None: torchrun's
            MASTER_ADDR / MASTER_PORT.
    """
    if dist.world_size() == 1:
        yield
        return

    if cuda:
        torch.cuda.set_device(rank_gpu(torch.cuda.device_count()))
    backend = "nccl" if cuda else "gloo"
    if store is None:
        torch_dist.init_process_group(backend=backend)
    else:
        torch_dist.init_process_group(backend=backend, store=store, rank=dist.rank(), world_size=dist.world_size())
    global _control
    # stop votes: a few bytes on the CPU, apart from NCCL's streams and DDP's buckets (interrupts.StopVote)
    _control = torch_dist.new_group(backend="gloo")
    if dist.rank() != 0:
        log.setLevel(logging.WARNING)
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _control = None
        torch_dist.destroy_process_group()


_control: Any = None


def control_group() -> Any:
    """The gloo process group for small CPU-side agreements between ranks (None alone)."""
    return _control


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    raise PeerFailed(PEER_FAILED)


def shared_run_dir(run_dir: Path) -> Path:
    """Rank 0's run dir on every rank (direct torchrun: each rank resolved its own timestamp)."""
    if not dist.initialized():
        return run_dir

    box = [str(run_dir)]
    torch_dist.broadcast_object_list(box, src=0)
    shared = Path(box[0])
    if shared.resolve() != run_dir.resolve() and run_dir.is_dir():
        leftovers = {p.name for p in run_dir.iterdir()}
        if leftovers <= {runs.HYDRA, runs.TRAIN_LOG}:  # only what Hydra made for this rank
            import shutil

            shutil.rmtree(run_dir, ignore_errors=True)
    return shared


def wrap_model(model: Any, device: Any, sync_batchnorm: bool = False, find_unused: bool = False) -> Any:
    """DDP around the model (its own state dict keys stay unwrapped); SyncBatchNorm when asked.

    Args:
        find_unused: parameters may get no gradient in a step (frozen-backbone epochs).
    """
    if dist.world_size() == 1 or not dist.initialized():
        return model

    if sync_batchnorm:
        if device.type == "cpu":
            raise UserError("trainer.sync_batchnorm=true needs GPUs (torch's SyncBatchNorm does not run on CPU); "
                            "drop it for trainer.device=cpu")
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # replaces the BN layers inside, same parameters
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=find_unused)


def barrier() -> None:
    """Wait until every rank is here (on the gloo group: no device work involved)."""
    torch_dist.barrier(group=_control)


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's `obj` (small, picklable), in rank order, on rank 0; None on the others."""
    box = [None] * dist.world_size() if dist.rank() == 0 else None
    torch_dist.gather_object(obj, box, dst=0, group=_control)
    return box


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (a small picklable value, e.g. a stop decision)."""
    box = [obj]
    torch_dist.broadcast_object_list(box, src=0, group=_control)
    return box[0]


def min_over_ranks(value: int) -> int:
    """The smallest of every rank's `value` (on the gloo group)."""
    t = torch.tensor([value], dtype=torch.int64)
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MIN, group=_control)
    return int(t.item())
