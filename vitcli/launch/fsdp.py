"""`trainer.strategy=fsdp`: FSDP2 (`torch.distributed.fsdp.fully_shard`) over a timm model.

Each block or stage is its own FSDP unit, then the root: timm's `group_matcher(coarse=True)`
already says what a block is for every family (ViT/DeiT blocks, Swin and ConvNeXt stages,
ResNet layers, EfficientNet stages), so no per-family table is kept here. Parameters, gradients
and optimizer state then live as DTensor shards, 1/world_size of each on every rank; a unit's
full weights exist only while its forward or backward runs.

A LoRA model (peft) is sharded the same way: the frozen base and the adapters sit in the same
units (FSDP2 allows trainable and frozen parameters side by side).
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

import torch

from vitcli.core.errors import UserError

log = logging.getLogger("vitcli")

PARAM_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def timm_model(model: torch.nn.Module) -> torch.nn.Module:
    """The timm model inside a peft wrapper (the model itself otherwise)."""
    inner = getattr(getattr(model, "base_model", None), "model", None)
    return inner if isinstance(inner, torch.nn.Module) and hasattr(inner, "group_matcher") else model


def block_names(model: torch.nn.Module) -> list[str]:
    """Names of the modules that become FSDP units: one per block or stage of timm's coarse grouping.

    A group's unit is the deepest module holding all of its nested layers (`blocks.3`, `layers.1`,
    `layer2`); layers that hang off the root itself (a final norm grouped with the last block, a
    stem of loose layers, the head) stay with the root.

    >>> import timm
    >>> block_names(timm.create_model("resnet18"))
    ['layer1', 'layer2', 'layer3', 'layer4']
    """
    from timm.models import group_modules

    matcher = getattr(model, "group_matcher", None)
    if matcher is None:
        return []
    names = []
    for members in group_modules(model, matcher(coarse=True)).values():
        parts = [m.split(".") for m in members if "." in m]
        common = []
        for level in zip(*parts):
            if len(set(level)) != 1:
                break
            common.append(level[0])
        # a leaf layer on its own (a head, a lone conv) gains nothing as a unit of its own
        if common and ".".join(common) not in members:
            names.append(".".join(common))
    return names


def mixed_precision(precision: str) -> Any:
    """FSDP2's policy for the run's precision: bf16/fp16 parameters in compute, fp32 gradient reduction."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    dtype = PARAM_DTYPES.get(str(precision))
    return MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32) if dtype else MixedPrecisionPolicy()


def shard_model(model: torch.nn.Module, precision: str = "32", reshard_after_forward: bool = True,
                cpu_offload: bool = False) -> torch.nn.Module:
    """Shard `model` in place over every rank of the process group: each block, then the root.

    Args:
        model: a timm model (or peft's wrapper of one), on this rank's device, the same on every rank.
        precision: the run's precision ('32' | 'bf16' | 'fp16'), for the mixed-precision policy.
        reshard_after_forward: free a unit's gathered weights after its forward (less memory, a second
            all-gather in backward); false keeps them until backward (faster, more memory).
        cpu_offload: keep the shards (and the optimizer step) on the CPU, copied to the GPU per unit.
    Returns:
        the same module, now an FSDPModule whose parameters are DTensors.
    """
    import torch.distributed as torch_dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

    if not torch_dist.is_initialized():
        raise UserError("trainer.strategy=fsdp needs several ranks: set trainer.devices=N (N > 1) or run under srun")
    device = next(model.parameters()).device
    if cpu_offload and device.type != "cuda":
        raise UserError("trainer.fsdp.cpu_offload=true moves shards off a GPU; on trainer.device=cpu drop it")
    mesh = init_device_mesh(device.type, (torch_dist.get_world_size(),))
    options = {"mesh": mesh, "mp_policy": mixed_precision(precision),
               "offload_policy": CPUOffloadPolicy() if cpu_offload else OffloadPolicy()}
    inner = timm_model(model)
    units = block_names(inner)
    for name in units:
        fully_shard(inner.get_submodule(name), reshard_after_forward=reshard_after_forward, **options)
    fully_shard(model, reshard_after_forward=reshard_after_forward, **options)
    log.info(f"FSDP: {len(units)} units + the root sharded over {torch_dist.get_world_size()} ranks")
    return model


def local_bytes(tensors: Iterable[torch.Tensor | None]) -> int:
    """Bytes this rank holds for `tensors` (a DTensor counts its local shard only).

    >>> local_bytes([torch.zeros(4), None, torch.zeros(2, dtype=torch.float64)])
    32
    """
    total = 0
    for t in tensors:
        if t is None:
            continue
        local = t.to_local() if hasattr(t, "to_local") else t
        total += local.numel() * local.element_size()
    return total


def training_bytes(model: torch.nn.Module, optimizer: Any) -> dict[str, int]:
    """This rank's parameter, gradient and optimizer-state bytes (local shards under FSDP)."""
    params = list(model.parameters())
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    return {"params": local_bytes(params), "grads": local_bytes(p.grad for p in params),
            "optimizer": local_bytes(state)}
