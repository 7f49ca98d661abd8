"""Optimizer and LR schedule from the optimizer / scheduler / regularization groups (timm)."""

from __future__ import annotations

from typing import Any

from vitcli.errors import UserError


def create_optimizer(model, opt_cfg: Any, weight_decay: float):
    """timm create_optimizer_v2: no weight decay on biases, norms and model.no_weight_decay()."""
    from timm.optim import create_optimizer_v2, list_optimizers

    if opt_cfg.lr <= 0:
        raise UserError(f"optimizer.lr={opt_cfg.lr} must be positive (e.g. optimizer.lr=1e-3)")
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
    return create_optimizer_v2(
        model, opt=name, lr=opt_cfg.lr, weight_decay=weight_decay, layer_decay=opt_cfg.layer_decay, **kwargs
    )


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
