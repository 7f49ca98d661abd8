"""The process's runtime: which device, which DDP rank, and which precision.

One `Runtime` is built per process (by the trainer, or by `load_run_model` for eval,
predict and explain) and handed to whatever places tensors or runs a forward pass:
data loaders, the model, the criterion and its teacher, evaluation. Nothing else
resolves a device or opens an autocast of its own, so precision and placement have
one source of truth.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from typing import Any, ContextManager, Mapping

import numpy as np
import torch

from vitcli.core import dist
from vitcli.core.errors import UserError

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when a GPU is visible, else cpu; cuda without a GPU is a UserError.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"trainer.device={name} but no CUDA GPU is visible; use trainer.device=cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise UserError(f"trainer.device={name} is not a device (use auto, cpu, cuda or cuda:N)") from err


def rank_gpu(device_count: int, env: Mapping[str, str] | None = None) -> int:
    """This DDP rank's GPU among the `device_count` it sees: cuda:LOCAL_RANK when the node's ranks
    share its GPUs (torchrun, `srun --gpus-per-node=N`), cuda:0 when SLURM gave each task its own
    GPU (`--gpus-per-task=1`: CUDA_VISIBLE_DEVICES then lists that one GPU in each task).

    >>> rank_gpu(1, {"LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "4", "RANK": "3", "WORLD_SIZE": "4",
    ...              "SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "4", "SLURM_GPUS_PER_TASK": "1"})
    0
    """
    env = os.environ if env is None else env
    local_rank = int(env.get("LOCAL_RANK", 0))
    local_world = int(env.get("LOCAL_WORLD_SIZE") or env.get("WORLD_SIZE") or 1)
    if device_count >= local_world:
        return local_rank
    # the ranks are SLURM's own tasks (not torchrun's processes inside one task), each bound to its GPUs
    own_gpus = bool(env.get("SLURM_GPUS_PER_TASK")) and env.get("RANK") == env.get("SLURM_PROCID") \
        and env.get("WORLD_SIZE") == (env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS"))
    if own_gpus and device_count >= 1:
        return 0
    raise UserError(f"{local_world} processes on this node need {local_world} GPUs but {device_count} "
                    f"{'is' if device_count == 1 else 'are'} visible to rank {env.get('RANK', 0)}; lower "
                    "trainer.devices (or --nproc-per-node / --ntasks-per-node), give each SLURM task its own GPU "
                    "(--gpus-per-task=1), or use trainer.device=cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def precision_name(precision: Any) -> str:
    """'32' | 'bf16' | 'fp16' from the schema's Precision choice (or a plain string / int)."""
    name = str(getattr(precision, "value", precision))
    return "32" if name in ("32", "fp32") else name


@dataclass
class Runtime:
    """Device, DDP position and numeric precision of this process.

    Args:
        device: where tensors live (cuda:LOCAL_RANK under DDP on GPUs).
        precision: '32', 'bf16' or 'fp16' (autocast; fp16 adds a GradScaler).
        rank / world_size / local_rank: the DDP position (0 / 1 / 0 alone).

    >>> rt = Runtime.create("cpu", "bf16")
    >>> with rt.autocast():
    ...     pass
    """

    device: torch.device
    precision: str = "32"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def create(cls, device: str = "auto", precision: Any = "32") -> "Runtime":
        """This process's runtime: the device resolved (one GPU per DDP rank) and the rank read from torchrun's env."""
        dev = resolve_device(device)
        if dist.world_size() > 1 and dev.type == "cuda":
            dev = torch.device("cuda", rank_gpu(torch.cuda.device_count()))
        return cls(dev, precision_name(precision), dist.rank(), dist.world_size(), dist.local_rank())

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files, logs and draws progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 and dist.initialized()

    def autocast(self) -> ContextManager:
        """The autocast context for a forward pass at this precision (a no-op at 32)."""
        dtype = AUTOCAST_DTYPES.get(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def create_scaler(self) -> Any:
        """A GradScaler for fp16 (bf16 has fp32's range and needs none), else None."""
        return torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over ranks (in place where possible); the identity alone."""
        return dist.all_reduce_sum(tensor) if self.distributed else tensor
