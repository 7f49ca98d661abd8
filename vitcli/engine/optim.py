"""Optimizer and LR schedule from the optimizer / scheduler / regularization groups (timm)."""

from __future__ import annotations

from typing import Any

from vitcli.errors import UserError


def param_groups(model, weight_decay: float, layer_decay: float | None, head_lr_mult: float) -> list[dict]:
    """timm's parameter groups (no decay on 1-d params and model.no_weight_decay();
    layer-wise lr decay when asked), with the classifier split into groups whose
    `lr_scale` is multiplied by head_lr_mult (timm schedulers apply lr_scale)."""
    from timm.optim._param_groups import param_groups_layer_decay, param_groups_weight_decay

    from vitcli.models import head_parameter_names

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


def create_optimizer(model, opt_cfg: Any, weight_decay: float):
    """timm create_optimizer_v2 over vitcli's parameter groups."""
    from timm.optim import create_optimizer_v2, list_optimizers

    if opt_cfg.lr <= 0:
        raise UserError(f"optimizer.lr={opt_cfg.lr} must be positive (e.g. optimizer.lr=1e-3)")
    if opt_cfg.head_lr_mult <= 0:
        raise UserError(f"optimizer.head_lr_mult={opt_cfg.head_lr_mult} must be positive")
    name = opt_cfg.name.lower()
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
    return create_optimizer_v2(groups, opt=name, lr=opt_cfg.lr, weight_decay=weight_decay, **kwargs)


def create_scheduler(optimizer, sched_cfg: Any, epochs: int, steps_per_epoch: int):
    """A timm scheduler stepped per update (`step_update(num_updates)`)."""
    from timm.scheduler import create_scheduler_v2

    name = sched_cfg.name
    common = dict(
        num_epochs=epochs,
        warmup_epochs=sched_cfg.warmup_epochs,
        warmup_lr=sched_cfg.warmup_lr,
        min_lr=sched_cfg.min_lr,
        step_on_epochs=False,
        updates_per_epoch=steps_per_epoch,
    )
    if name == "cosine":
        scheduler, _ = create_scheduler_v2(optimizer, sched="cosine", **common)
    elif name == "step":
        scheduler, _ = create_scheduler_v2(
            optimizer, sched="step", decay_epochs=sched_cfg.decay_epochs, decay_rate=sched_cfg.decay_rate, **common
        )
    elif name == "constant":
        scheduler, _ = create_scheduler_v2(optimizer, sched="step", decay_epochs=10**9, decay_rate=1.0, **common)
    else:
        raise UserError(f"scheduler.name={name} is not supported; use cosine, step or constant")
    return scheduler
