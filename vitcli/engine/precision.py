"""Mixed precision: an autocast context factory and a GradScaler for fp16."""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

from vitcli.errors import UserError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_factory(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A zero-argument callable returning the autocast context for each forward."""
    precision = str(precision)
    if precision in ("32", "fp32"):
        return contextlib.nullcontext
    if precision not in DTYPES:
        raise UserError(f"trainer.precision={precision} is not one of 32, bf16, fp16")
    dtype = DTYPES[precision]
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def create_scaler(precision: str, device: torch.device):
    """GradScaler for fp16 (bf16 has fp32's range and needs none)."""
    if str(precision) != "fp16":
        return None
    return torch.amp.GradScaler(device.type)
