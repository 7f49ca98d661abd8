"""Everything a training run is made of, built once from its config: data (sharded per
DDP rank), model (EMA, DDP, compile), optimizer with its lr, schedule, MixUp/CutMix
and the criterion (with its teacher). The loop in trainer.py only uses these parts.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from timm.utils import ModelEmaV3

from vitcli.core.errors import UserError
from vitcli.core.runtime import Runtime, seed_everything
from vitcli.data import create_data
from vitcli.data.mixing import create_mixup
from vitcli.data.normalization import resolve_normalization
from vitcli.launch.comm import wrap_model
from vitcli.launch.fsdp import shard_model
from vitcli.engine.optim import (
    create_optimizer,
    create_scheduler,
    global_batch_size,
    scaled_lr,
)
from vitcli.loss.losses import create_criterion
from vitcli.models.factory import count_params, create_model, enable_grad_checkpointing

if TYPE_CHECKING:
    from vitcli.core.schema import TrainConfig, TrainerConfig
    from vitcli.data.module import DataModule

log = logging.getLogger("vitcli")


@dataclass
class TrainParts:
    """The built components of a run; `model` is the bare model whose state dict is saved,
    `forward_model` what the step calls (DDP-wrapped and/or compiled)."""

    data: DataModule
    select_split: str  # where best.pt is chosen: minival when carved, else val
    model: torch.nn.Module
    forward_model: Any
    ema: Any
    optimizer: Any
    scheduler: Any
    scaler: Any
    mixup: Any
    criterion: Any
    lr: float  # the base lr after lr_base scaling
    global_batch: int
    steps_per_epoch: int  # optimizer steps per epoch: a last, partial accumulation group counts as one
    num_params: int

    @property
    def train_loader(self) -> Any:
        return self.data.loader("train")

    @property
    def val_loader(self) -> Any:
        return self.data.loader(self.select_split)


def validate_trainer_cfg(tcfg: TrainerConfig) -> None:
    if tcfg.epochs <= 0:
        raise UserError(f"trainer.epochs={tcfg.epochs} must be at least 1")
    if tcfg.grad_accum < 1:
        raise UserError(f"trainer.grad_accum={tcfg.grad_accum} must be at least 1")
    if tcfg.freeze_backbone_epochs < 0:
        raise UserError(f"trainer.freeze_backbone_epochs={tcfg.freeze_backbone_epochs} must be >= 0")
    if tcfg.early_stop_patience < 0:
        raise UserError(f"trainer.early_stop_patience={tcfg.early_stop_patience} must be >= 0 (0: off)")
    if tcfg.log_interval < 1:
        raise UserError(f"trainer.log_interval={tcfg.log_interval} must be at least 1")


def validate_lora_cfg(cfg: TrainConfig) -> None:
    """Settings that would silently do nothing on a LoRA run (peft decides what trains; its parameter
    names carry peft's prefix, which timm's layer-decay grouping does not know). freeze_backbone_epochs
    applies: the head trains alone for those epochs, then with the adapters (models/factory.py)."""
    if str(cfg.model.peft) != "lora":
        return
    if cfg.optimizer.layer_decay is not None:
        raise UserError(f"optimizer.layer_decay={cfg.optimizer.layer_decay} does not apply with model.peft=lora "
                        "(the frozen blocks have no learning rate); set optimizer.layer_decay=null")


def build_data(cfg: TrainConfig, runtime: Runtime) -> DataModule:
    """The run's data on the runtime's device; under DDP each rank keeps its shard of every split
    (train padded for equal step counts, evaluation splits not, so each sample counts once)."""
    data = create_data(cfg, device=str(runtime.device))
    data.info["devices"] = runtime.world_size
    if runtime.world_size > 1:
        for split, loader in data.loaders.items():
            loader.shard(runtime.rank, runtime.world_size, pad=split == "train")
    return data


def build_model(cfg: TrainConfig, num_classes: int, runtime: Runtime) -> tuple[torch.nn.Module, Any, Any]:
    """(model on the device, EMA copy or None, what the step calls: DDP-wrapped and/or compiled).
    Under trainer.strategy=fsdp the model (and its EMA copy, made first) are sharded in place instead."""
    tcfg = cfg.trainer
    model = create_model(cfg.model, num_classes, cfg.regularization, seed=tcfg.seed).to(runtime.device)
    if tcfg.grad_checkpointing:
        enable_grad_checkpointing(model, cfg.model.name)
    if tcfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = None
    if tcfg.ema:
        ema = ModelEmaV3(model, decay=tcfg.ema_decay, use_warmup=tcfg.ema_warmup)
    if str(tcfg.strategy) == "fsdp":
        for module in (model, ema.module if ema is not None else None):
            if module is not None:
                shard_model(module, runtime.precision, tcfg.fsdp.reshard_after_forward, tcfg.fsdp.cpu_offload)
        forward = model
    else:
        # frozen-backbone epochs leave parameters without gradients, which DDP must be told about
        forward = wrap_model(model, runtime.device, tcfg.sync_batchnorm, find_unused=tcfg.freeze_backbone_epochs > 0)
    return model, ema, torch.compile(forward) if tcfg.compile else forward


def validate_strategy(cfg: TrainConfig, runtime: Runtime) -> None:
    """Settings FSDP cannot honour, refused before anything is built."""
    tcfg = cfg.trainer
    if str(tcfg.strategy) != "fsdp":
        return
    if runtime.world_size < 2:
        raise UserError("trainer.strategy=fsdp shards a model over several ranks: set trainer.devices=N (N > 1) "
                        "or run under srun with several tasks")
    if runtime.precision == "fp16":
        raise UserError("trainer.precision=fp16 with trainer.strategy=fsdp: fp16 needs a gradient scaler that "
                        "agrees across shards; use trainer.precision=bf16 (or 32)")
    if tcfg.sync_batchnorm:
        raise UserError("trainer.sync_batchnorm=true applies to trainer.strategy=ddp; drop it with fsdp")


def build_parts(cfg: TrainConfig, runtime: Runtime) -> TrainParts:
    """Build a run's parts in the order exact resume relies on (seed, data, model, then per-rank seeds)."""
    tcfg = cfg.trainer
    resolve_normalization(cfg)  # data.mean/std=auto -> the weights' own; recorded in config.yaml
    validate_trainer_cfg(tcfg)
    validate_lora_cfg(cfg)
    validate_strategy(cfg, runtime)
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    seed_everything(tcfg.seed)
    data = build_data(cfg, runtime)
    select_split = "minival" if "minival" in data.loaders else "val"  # model selection never sees val then
    model, ema, forward_model = build_model(cfg, data.num_classes, runtime)
    if runtime.world_size > 1:  # different dropout / MixUp draws per rank, after identical models
        seed_everything(tcfg.seed + runtime.rank)
    global_batch = global_batch_size(cfg.data.batch_size, runtime.world_size, tcfg.grad_accum)
    data.info["global_batch_size"] = global_batch
    lr = scaled_lr(cfg.optimizer, global_batch)
    scaling = "" if cfg.optimizer.lr_base is None else \
        f" = lr_base {cfg.optimizer.lr_base:.3g} x {cfg.optimizer.lr_base_scale}({global_batch}/{cfg.optimizer.lr_base_size})"
    log.info(f"global batch {global_batch} = {cfg.data.batch_size} per device x {runtime.world_size} device(s) x "
             f"{tcfg.grad_accum} accumulation step(s); lr {lr:.3g}{scaling}")
    optimizer = create_optimizer(model, cfg.optimizer, cfg.regularization.weight_decay, lr=lr)
    steps_per_epoch = accumulation_steps(len(data.loader("train")), tcfg.grad_accum)
    scheduler = create_scheduler(optimizer, cfg.scheduler, tcfg.epochs, steps_per_epoch)
    mixup = create_mixup(cfg.augmentation, cfg.regularization.label_smoothing, data.num_classes)
    criterion = create_criterion(cfg, runtime=runtime, num_classes=data.num_classes, mean=list(cfg.data.mean),
                                 std=list(cfg.data.std), model=model, class_counts=data.class_counts,
                                 class_names=list(data.class_names))
    return TrainParts(data, select_split, model, forward_model, ema, optimizer, scheduler, runtime.create_scaler(),
                      mixup, criterion, lr, global_batch, steps_per_epoch, count_params(model))


def accumulation_steps(batches: int, grad_accum: int) -> int:
    """Optimizer steps in an epoch of `batches` micro-batches: the loop also steps after a last,
    partial group, so the schedule must count it.

    >>> accumulation_steps(7, 3)
    3
    """
    return max(1, math.ceil(batches / grad_accum))


def accumulation_group(batch: int, batches: int, grad_accum: int) -> int:
    """How many micro-batches share the optimizer step of micro-batch `batch` (0-based): grad_accum,
    or fewer in the epoch's last, partial group. Each micro-batch's loss is divided by it, so every
    optimizer step follows the mean loss of its own group.

    >>> [accumulation_group(i, 7, 3) for i in range(7)]
    [3, 3, 3, 3, 3, 3, 1]
    """
    start = batch - batch % grad_accum
    return min(grad_accum, batches - start)
