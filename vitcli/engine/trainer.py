"""The training loop: one `Trainer` per run directory.

Exact resume: the data order and augmentation of every batch depend only on
(seed, epoch, batch index), and checkpoints carry every RNG the loop draws from
(dropout, MixUp, noise), so a run killed at any step and resumed from last.pt
ends with the same weights as an uninterrupted one (bitwise on CPU).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from vitcli import runs
from vitcli.engine import distributed
from vitcli.engine.checkpoint import load_checkpoint, save_checkpoint
from vitcli.engine.losses import create_criterion
from vitcli.engine.optim import create_optimizer, create_scheduler
from vitcli.engine.precision import autocast_factory, create_scaler
from vitcli.engine.progress import EpochProgress, choose_mode
from vitcli.engine.rng import rng_state, set_rng_state
from vitcli.errors import UserError
from vitcli.tracking import read_jsonl, write_json

log = logging.getLogger("vitcli")


class NonFiniteLoss(UserError):
    pass


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"trainer.device={name} but no CUDA GPU is visible; use trainer.device=cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise UserError(f"trainer.device={name} is not a device (use auto, cpu, cuda or cuda:N)") from err


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def validate_trainer_cfg(tcfg: Any) -> None:
    if tcfg.epochs <= 0:
        raise UserError(f"trainer.epochs={tcfg.epochs} must be at least 1")
    if tcfg.grad_accum < 1:
        raise UserError(f"trainer.grad_accum={tcfg.grad_accum} must be at least 1")
    if tcfg.freeze_backbone_epochs < 0:
        raise UserError(f"trainer.freeze_backbone_epochs={tcfg.freeze_backbone_epochs} must be >= 0")


class Trainer:
    """Builds data, model, optimizer and schedule from a train config and fits them."""

    def __init__(self, cfg: Any, run_dir: Path):
        from omegaconf import OmegaConf

        from vitcli.data import create_data
        from vitcli.data.mixing import create_mixup
        from vitcli.models import count_params, create_model, enable_grad_checkpointing

        self.cfg, self.run_dir, tcfg = cfg, Path(run_dir), cfg.trainer
        validate_trainer_cfg(tcfg)
        if tcfg.threads:
            torch.set_num_threads(tcfg.threads)
        self.device = distributed.rank_device(resolve_device(tcfg.device))
        self.main = distributed.is_main()  # only rank 0 writes files, logs and draws progress
        self.progress_mode = choose_mode(tcfg.progress) if self.main else "none"
        self.autocast = autocast_factory(tcfg.precision, self.device)
        self.scaler = create_scaler(tcfg.precision, self.device)
        seed_everything(tcfg.seed)

        self.data = create_data(cfg, device=str(self.device))
        distributed.shard_data(self.data, cfg)
        # With data.minival_fraction > 0, model selection (best.pt, EMA vs raw) uses minival, never val.
        self.select_split = "minival" if "minival" in self.data.loaders else "val"
        self.train_loader, self.val_loader = self.data.loader("train"), self.data.loader(self.select_split)
        self.model = create_model(cfg.model, self.data.num_classes, cfg.regularization).to(self.device)
        if tcfg.grad_checkpointing:
            enable_grad_checkpointing(self.model, cfg.model.name)
        if tcfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.num_params = count_params(self.model)
        self.ema = None
        if tcfg.ema:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=tcfg.ema_decay, use_warmup=tcfg.ema_warmup)
        ddp_model = distributed.wrap_model(self.model, self.device, tcfg)  # self.model stays unwrapped
        self.forward_model = torch.compile(ddp_model) if tcfg.compile else ddp_model
        distributed.seed_rank(tcfg.seed)
        distributed.scale_lr(cfg)
        self.optimizer = create_optimizer(self.model, cfg.optimizer, cfg.regularization.weight_decay)
        self.batches_per_epoch = len(self.train_loader)
        self.steps_per_epoch = max(1, self.batches_per_epoch // tcfg.grad_accum)
        self.scheduler = create_scheduler(self.optimizer, cfg.scheduler, tcfg.epochs, self.steps_per_epoch)
        self.mixup = create_mixup(cfg.augmentation, cfg.regularization.label_smoothing, self.data.num_classes)
        self.criterion = create_criterion(cfg, device=self.device, num_classes=self.data.num_classes,
                                          mean=list(cfg.data.mean), std=list(cfg.data.std), model=self.model,
                                          autocast=self.autocast)
        self.metrics = distributed.metrics_logger(self.run_dir, cfg)
        self.config_yaml = OmegaConf.to_yaml(cfg, resolve=True)

        self.epoch = 0  # epochs completed
        self.batch_in_epoch = 0  # micro-batches done in the current epoch (mid-epoch checkpoints)
        self.global_step = 0  # optimizer steps
        self.epoch_loss_sum, self.epoch_seen = 0.0, 0
        self.best: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.train_images, self.train_seconds = 0, 0.0
        self.wall_start = time.time()

    # ---- one micro-batch / optimizer step -----------------------------------
    def forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from vitcli.data.mixing import add_gaussian_noise

        if self.mixup is not None and self.mixup.mixup_enabled:
            x, y = self.mixup(x, y)
        if self.cfg.augmentation.gaussian_noise:
            x = add_gaussian_noise(x, self.cfg.augmentation.gaussian_noise)
        if self.cfg.trainer.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            loss = self.criterion(x, self.forward_model(x), y)
        scaled = loss / self.cfg.trainer.grad_accum
        (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        return loss.detach()

    def optimizer_step(self) -> None:
        clip = self.cfg.trainer.clip_grad
        if self.scaler is not None:
            if clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        self.scheduler.step_update(num_updates=self.global_step)
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One full optimizer step on one batch (used by benchmarks)."""
        loss = self.forward_backward(x, y)
        self.optimizer_step()
        return loss

    def prepare_epoch(self, epoch: int) -> None:
        from vitcli.models import set_backbone_trainable

        off = self.cfg.augmentation.mixup_off_epoch
        if self.mixup is not None:
            self.mixup.mixup_enabled = not (off and epoch >= off)
        frozen = epoch < self.cfg.trainer.freeze_backbone_epochs
        set_backbone_trainable(self.model, not frozen)
        if frozen and self.batch_in_epoch == 0:
            log.info(f"epoch {epoch + 1}: backbone frozen, training the classifier only")
        self.model.train()
        self.train_loader.set_epoch(epoch, self.batch_in_epoch)

    def train_one_epoch(self, epoch: int) -> dict[str, Any]:
        tcfg = self.cfg.trainer
        self.prepare_epoch(epoch)
        start = self.batch_in_epoch
        bar = EpochProgress(self.progress_mode, epoch, tcfg.epochs, self.batches_per_epoch, tcfg.log_interval, start)
        t0, seen_now = time.perf_counter(), 0
        try:
            for i, (x, y) in enumerate(self.train_loader, start=start):
                loss = self.forward_backward(x, y)
                loss_value = distributed.mean_item(loss)
                if not math.isfinite(loss_value):
                    raise NonFiniteLoss(
                        f"loss became {loss_value} at epoch {epoch + 1} batch {i + 1}; the run stopped and "
                        "checkpoints/last.pt holds the last good state (lower optimizer.lr, add warmup or clip_grad)"
                    )
                self.epoch_loss_sum += loss_value * y.shape[0]
                self.epoch_seen += y.shape[0]
                seen_now += y.shape[0]
                self.batch_in_epoch = i + 1
                if self.batch_in_epoch % tcfg.grad_accum and self.batch_in_epoch != self.batches_per_epoch:
                    continue
                self.optimizer_step()
                self.after_step(epoch, i, bar, loss_value, seen_now / max(time.perf_counter() - t0, 1e-9))
        finally:
            bar.close()
        elapsed = time.perf_counter() - t0
        self.train_images += seen_now
        self.train_seconds += elapsed
        stats = {"train_loss": self.epoch_loss_sum / max(self.epoch_seen, 1),
                 "images_per_s": seen_now / max(elapsed, 1e-9), "epoch_time_s": elapsed}
        # criteria may report their own per-epoch figures (e.g. distillation: teacher ms per step)
        stats.update(getattr(self.criterion, "epoch_stats", dict)())
        return stats

    def after_step(self, epoch: int, i: int, bar: EpochProgress, loss_value: float, images_per_s: float) -> None:
        tcfg = self.cfg.trainer
        lr = self.optimizer.param_groups[-1]["lr"]
        bar.update(i, loss_value, lr, images_per_s)
        if self.global_step % tcfg.log_interval == 0:
            self.metrics.log({"kind": "step", "epoch": epoch + 1, "global_step": self.global_step,
                              "train_loss": loss_value, "lr": lr, "images_per_s": images_per_s})
        if tcfg.ckpt_interval_steps and self.global_step % tcfg.ckpt_interval_steps == 0 \
                and self.batch_in_epoch < self.batches_per_epoch and self.main:
            save_checkpoint(self.state_dict(), runs.checkpoint_path(self.run_dir, "last"))

    # ---- checkpoints ----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "global_step": self.global_step,
            "epoch_loss_sum": self.epoch_loss_sum,
            "epoch_seen": self.epoch_seen,
            "best": dict(self.best),
            "config": self.config_yaml,
            "class_names": list(self.data.class_names),
            "num_classes": self.data.num_classes,
            "rng": rng_state(),
            "train_images": self.train_images,
            "train_seconds": self.train_seconds,
        }
        if self.ema is not None:
            state["model_ema"] = self.ema.module.state_dict()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None and "model_ema" in state:
            self.ema.module.load_state_dict(state["model_ema"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        for key in ("epoch", "batch_in_epoch", "global_step", "epoch_seen", "train_images"):
            setattr(self, key, int(state.get(key, 0)))
        self.epoch_loss_sum = float(state.get("epoch_loss_sum", 0.0))
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.best = dict(state.get("best") or {})
        set_rng_state(state["rng"])
        self.scheduler.step_update(num_updates=self.global_step)

    def maybe_resume(self) -> bool:
        last = runs.checkpoint_path(self.run_dir, "last")
        if not last.is_file():
            return False
        self.load_state_dict(load_checkpoint(last, map_location=self.device))
        self.metrics.truncate_after(self.epoch, self.global_step)
        self.history = [{k: v for k, v in r.items() if k != "kind"} for r in read_jsonl(self.metrics.jsonl)
                        if r.get("kind") == "epoch"]
        where = f"epoch {self.epoch + 1} batch {self.batch_in_epoch}" if self.batch_in_epoch else f"epoch {self.epoch}"
        log.info(f"resumed from {last} after {where} (step {self.global_step})")
        return True

    def save_epoch_checkpoints(self, improved_source: str | None) -> None:
        if not self.main:
            return
        state = self.state_dict()
        save_checkpoint(state, runs.checkpoint_path(self.run_dir, "last"))
        if improved_source is not None:
            # best.pt's "model" holds the best weights, whichever copy (raw or EMA) they came from
            if improved_source == "ema":
                state = {**state, "model": state["model_ema"]}
            save_checkpoint({**state, "best_source": improved_source}, runs.checkpoint_path(self.run_dir, "best"))

    # ---- the loop -------------------------------------------------------------
    def validate(self) -> tuple[dict[str, Any], str | None]:
        """Evaluate raw (and EMA) weights; update self.best; return the record and the improved source."""
        val = distributed.evaluate(self.model, self.val_loader, self.device, autocast=self.autocast)
        record = {"val_top1": val["top1"], "val_top5": val["top5"], "val_loss": val["loss"]}
        candidates = [("model", val)]
        if self.ema is not None:
            ema_val = distributed.evaluate(self.ema.module, self.val_loader, self.device, autocast=self.autocast)
            record.update(ema_top1=ema_val["top1"], ema_top5=ema_val["top5"], ema_loss=ema_val["loss"])
            candidates.append(("ema", ema_val))
        source, metrics = max(candidates, key=lambda c: c[1]["top1"])
        if self.best and metrics["top1"] <= self.best["val_top1"]:
            return record, None
        self.best = {"epoch": self.epoch, "val_top1": metrics["top1"], "val_top5": metrics["top5"],
                     "val_loss": metrics["loss"], "source": source}
        return record, source

    def summary(self, status: str, error: str | None = None) -> dict[str, Any]:
        return {
            "status": status, "error": error, "experiment": self.cfg.name, "model": self.cfg.model.name,
            "timm_name": self.cfg.model.timm_name, "data": self.cfg.data.name, "num_classes": self.data.num_classes,
            "num_params": self.num_params, "device": str(self.device), "precision": str(self.cfg.trainer.precision),
            "epochs": self.cfg.trainer.epochs, "epochs_completed": self.epoch, "selection_split": self.select_split, "global_step": self.global_step,
            "best": self.best, "final": self.history[-1] if self.history else {},
            "wall_time_s": round(time.time() - self.wall_start, 3),
            "train_images_per_s": self.train_images / self.train_seconds if self.train_seconds else None,
            **self.data.info,
        }

    def finish(self, summary: dict[str, Any]) -> None:
        if not self.main:
            return
        write_json(self.run_dir / runs.SUMMARY, summary)
        self.metrics.finish(summary)

    def fit(self) -> dict[str, Any]:
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / runs.CONFIG).write_text(self.config_yaml)
        self.maybe_resume()
        epochs = self.cfg.trainer.epochs
        log.info(
            f"training {self.cfg.model.name} ({self.num_params / 1e6:.2f}M params) on {self.cfg.data.name} "
            f"({self.data.info.get('train_samples')} train / {self.data.info.get('val_samples')} val) "
            f"for {epochs} epochs on {self.device}; run dir {self.run_dir}"
        )
        if self.main:
            write_json(self.run_dir / runs.SUMMARY, self.summary("running"))
        try:
            for epoch in range(self.epoch, epochs):
                self.run_epoch(epoch)
        except KeyboardInterrupt:
            self.finish(self.summary("interrupted"))
            raise
        except Exception as err:
            self.finish(self.summary("failed", str(err).splitlines()[0] if str(err) else type(err).__name__))
            raise
        self.export()
        summary = self.summary("completed")
        self.finish(summary)
        best = self.best
        log.info(f"done: best val_top1 {best['val_top1']:.2f} (epoch {best['epoch']}, {best['source']} weights) "
                 f"in {summary['wall_time_s']:.0f}s; {self.run_dir}")
        return summary

    def run_epoch(self, epoch: int) -> None:
        train_stats = self.train_one_epoch(epoch)
        self.epoch, self.batch_in_epoch = epoch + 1, 0
        self.epoch_loss_sum, self.epoch_seen = 0.0, 0
        val_record, improved = self.validate()
        record = {"epoch": self.epoch, **train_stats, **val_record, "lr": self.optimizer.param_groups[-1]["lr"]}
        self.history.append(record)
        self.metrics.log_epoch(record)
        self.save_epoch_checkpoints(improved)
        ema = f"  ema_top1 {record['ema_top1']:.2f}" if "ema_top1" in record else ""
        log.info(
            f"epoch {self.epoch}/{self.cfg.trainer.epochs}  train_loss {train_stats['train_loss']:.4f}  "
            f"val_top1 {record['val_top1']:.2f}  val_top5 {record['val_top5']:.2f}  val_loss {record['val_loss']:.4f}"
            f"{ema}  {train_stats['images_per_s']:,.0f} img/s" + (f"  *best ({improved})*" if improved else "")
        )
        if self.main:
            write_json(self.run_dir / runs.SUMMARY, self.summary("running"))

    def export(self) -> None:
        if not self.cfg.trainer.export_safetensors or not self.main:
            return
        from vitcli.engine.export import export_safetensors

        best = load_checkpoint(runs.checkpoint_path(self.run_dir, "best"))
        export_safetensors(best["model"], self.run_dir / "model.safetensors",
                           {"timm_name": self.cfg.model.timm_name, "num_classes": str(self.data.num_classes),
                            "source": str(self.best.get("source")), "epoch": str(self.best.get("epoch"))})
