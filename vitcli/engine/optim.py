"""Optimizer and LR schedule from the optimizer / scheduler / regularization groups (timm)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from timm.optim import (
    create_optimizer_v2,
    list_optimizers,
    param_groups_layer_decay,
    param_groups_weight_decay,
)
from timm.scheduler import create_scheduler_v2

from vitcli.core.errors import UserError
from vitcli.models.factory import head_parameter_names

if TYPE_CHECKING:
    from vitcli.core.schema import OptimizerConfig, SchedulerConfig


def param_groups(model, weight_decay: float, layer_decay: float | None, head_lr_mult: float) -> list[dict]:
    """timm's parameter groups (no decay on 1-d params and model.no_weight_decay();
    layer-wise lr decay when asked), with the classifier split into groups whose
    `lr_scale` is multiplied by head_lr_mult (timm schedulers apply lr_scale)."""


    no_decay = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    if layer_decay is not None:
        groups = param_groups_layer_decay(model, weight_decay, no_decay, layer_decay=layer_decay)
    else:
        groups = param_groups_weight_decay(model, weight_decay, no_weight_decay_list=no_decay)
    if head_lr_mult == 1.0:
        return groups
    head_ids = {id(p) for n, p in model.named_parameters() if n in head_parameter_names(model)}
    split: list[dict] = []
    for group in groups:
        params = list(group["params"])
        for is_head in (False, True):
            chosen = [p for p in params if (id(p) in head_ids) == is_head]
            if chosen:
                scale = group.get("lr_scale", 1.0) * (head_lr_mult if is_head else 1.0)
                split.append({**group, "params": chosen, "lr_scale": scale})
    return split


def create_optimizer(model, opt_cfg: OptimizerConfig, weight_decay: float, lr: float | None = None):
    """timm create_optimizer_v2 over vitcli's parameter groups.

    Args:
        lr: the base learning rate (default: opt_cfg.lr; see scaled_lr for lr_base).
    """

    if opt_cfg.lr <= 0:
        raise UserError(f"optimizer.lr={opt_cfg.lr} must be positive (e.g. optimizer.lr=1e-3)")
    if opt_cfg.head_lr_mult <= 0:
        raise UserError(f"optimizer.head_lr_mult={opt_cfg.head_lr_mult} must be positive")
    name = str(opt_cfg.name).lower()
    if name not in list_optimizers():
        raise UserError(f"optimizer.name={opt_cfg.name} is not a timm optimizer; try adamw, sgd, lamb, lion")
    kwargs: dict[str, Any] = dict(opt_cfg.kwargs or {})
    if name in ("sgd", "nesterov", "momentum", "rmsprop", "rmsproptf", "lars", "nlars"):
        kwargs["momentum"] = opt_cfg.momentum
    if opt_cfg.betas is not None:
        kwargs["betas"] = tuple(opt_cfg.betas)
    if opt_cfg.eps is not None:
        kwargs["eps"] = opt_cfg.eps
    groups = param_groups(model, weight_decay, opt_cfg.layer_decay, opt_cfg.head_lr_mult)
    return create_optimizer_v2(groups, opt=name, lr=opt_cfg.lr if lr is None else lr, weight_decay=weight_decay,
                               **kwargs)


def global_batch_size(batch_size: int, world_size: int, grad_accum: int) -> int:
    """Samples per optimizer step: per-device batch x devices x accumulation steps."""
    return batch_size * world_size * grad_accum


def scaled_lr(opt_cfg: OptimizerConfig, global_batch: int) -> float:
    """optimizer.lr, or lr_base x (global batch / lr_base_size) when lr_base is set, linearly or
    by sqrt (timm's and DeiT's rule). Pure: the caller decides where the value goes.

    >>> scaled_lr(OmegaConf.structured(OptimizerConfig(lr_base=5e-4)), 1024)  # doctest: +SKIP
    0.002
    """
    if opt_cfg.lr_base is None:
        return float(opt_cfg.lr)
    if opt_cfg.lr_base_size <= 0:
        raise UserError(f"optimizer.lr_base_size={opt_cfg.lr_base_size} must be positive")
    ratio = global_batch / opt_cfg.lr_base_size
    return float(opt_cfg.lr_base * (math.sqrt(ratio) if str(opt_cfg.lr_base_scale) == "sqrt" else ratio))


def create_scheduler(optimizer, sched_cfg: SchedulerConfig, epochs: int, steps_per_epoch: int):
    """Any timm scheduler by name (create_scheduler_v2), stepped per update, or per epoch for
    `plateau` (which follows the selection metric; Trainer calls step(epoch, metric))."""

    name = str(sched_cfg.name)
    per_epoch = name == "plateau"
    kwargs: dict[str, Any] = dict(sched_cfg.kwargs or {})
    if sched_cfg.decay_epochs is not None:
        kwargs["decay_epochs"] = sched_cfg.decay_epochs
    try:
        scheduler, _ = create_scheduler_v2(
            optimizer, sched=name, num_epochs=epochs, warmup_epochs=sched_cfg.warmup_epochs,
            warmup_lr=sched_cfg.warmup_lr, min_lr=sched_cfg.min_lr, decay_rate=sched_cfg.decay_rate,
            decay_milestones=list(sched_cfg.decay_milestones), patience_epochs=sched_cfg.patience_epochs,
            step_on_epochs=per_epoch, updates_per_epoch=steps_per_epoch, **kwargs)
    except (ValueError, TypeError, AssertionError) as err:
        raise UserError(f"scheduler={name}: timm rejected the settings ({err}); check scheduler.* values") from err
    return scheduler
