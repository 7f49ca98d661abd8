"""Who this process is in a data-parallel job, read from the launcher's environment
(torchrun sets RANK, WORLD_SIZE, LOCAL_RANK), and the one collective every layer may
need: a sum over ranks. Joining the process group and wrapping models live in launch/comm.py.
"""

from __future__ import annotations

import os
from typing import Any

import torch.distributed as torch_dist


def under_launcher() -> bool:
    """Started by a launcher that set RANK and WORLD_SIZE (torchrun)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1)) if under_launcher() else 1


def rank() -> int:
    return int(os.environ.get("RANK", 0)) if under_launcher() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0)) if under_launcher() else 0


def initialized() -> bool:
    """A torch.distributed process group is up in this process."""
    return torch_dist.is_available() and torch_dist.is_initialized()


def all_reduce_sum(tensor: Any) -> Any:
    """Sum over ranks. gloo reduces on the CPU, so a CUDA tensor makes the round trip there."""
    if torch_dist.get_backend() == "nccl" or tensor.device.type == "cpu":
        torch_dist.all_reduce(tensor)
        return tensor
    host = tensor.cpu()
    torch_dist.all_reduce(host)
    return host.to(tensor.device)
