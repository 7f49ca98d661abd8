"""The training loop: one `Trainer` per run directory.

Exact resume: the data order and augmentation of every batch depend only on
(seed, epoch, batch index), and checkpoints carry every RNG the loop draws from
(dropout, MixUp, noise), so a run killed at any step and resumed from last.pt
ends with the same weights as an uninterrupted one (bitwise on CPU).

No host sync inside the step: the loss is summed on the device and its finiteness
checked there; both are read back (and, under DDP, all-reduced) only at log points
(every `trainer.log_interval` optimizer steps), before a checkpoint, and at epoch end.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vitcli.core import runs
from vitcli.engine import interrupts
from vitcli.engine.build import build_parts
from vitcli.engine.loss_window import LossWindow, NonFiniteLoss  # noqa: F401  (raised by the loop)
from vitcli.engine.progress import EpochProgress, choose_mode
from vitcli.engine.run_state import RunState
from vitcli.core.runtime import Runtime

if TYPE_CHECKING:
    from vitcli.core.schema import TrainConfig

log = logging.getLogger("vitcli")


class Trainer(RunState):
    """Builds a run's parts from its config (engine/build.py) and fits them.

    Args:
        cfg: the composed train config (conf/train.yaml + overrides).
        run_dir: where checkpoints, metrics and the summary go (rank 0 writes).
        runtime: device, DDP rank and precision (default: built from cfg.trainer).

    >>> Trainer(cfg, Path("runs/demo")).fit()["best"]["val_top1"]  # doctest: +SKIP
    """

    def __init__(self, cfg: TrainConfig, run_dir: Path, runtime: Runtime | None = None):
        from omegaconf import OmegaConf

        from vitcli.models.factory import count_params
        from vitcli.engine.tracking import MetricsLogger, NullMetrics

        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.runtime = runtime or Runtime.create(cfg.trainer.device, cfg.trainer.precision)
        self.main = self.runtime.is_main  # only rank 0 writes files, logs and draws progress
        self.progress_mode = choose_mode(cfg.trainer.progress) if self.main else "none"
        parts = build_parts(cfg, self.runtime)
        self.parts, self.data, self.select_split = parts, parts.data, parts.select_split
        self.train_loader, self.val_loader = parts.train_loader, parts.val_loader
        self.model, self.forward_model, self.ema = parts.model, parts.forward_model, parts.ema
        self.optimizer, self.scheduler, self.scaler = parts.optimizer, parts.scheduler, parts.scaler
        self.mixup, self.criterion = parts.mixup, parts.criterion
        self.num_params = count_params(self.model)
        self.batches_per_epoch = len(self.train_loader)
        self.metrics = MetricsLogger(self.run_dir, cfg) if self.main else NullMetrics()
        self.config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
        self.window = LossWindow(self.runtime)
        self.init_state()

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    # ---- one micro-batch / optimizer step -----------------------------------
    def forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Forward and backward of one micro-batch at the run's precision (MixUp/CutMix and noise first).

        Args:
            x: normalized inputs (N, 3, H, W) on the device. y: labels (N,).
        Returns:
            the detached loss, still on the device (nothing is read back here).
        """
        from vitcli.data.mixing import mix_batch

        x, y = mix_batch(x, y, self.mixup, self.cfg.augmentation)
        if self.cfg.trainer.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.runtime.autocast():
            loss = self.criterion(x, self.forward_model(x), y)
        scaled = loss / self.cfg.trainer.grad_accum
        (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        return loss.detach()

    def optimizer_step(self) -> None:
        """Clip, step (through the GradScaler for fp16), zero grads, advance the schedule and the EMA."""
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
        """One full optimizer step on one batch (used by benchmarks and tests)."""
        loss = self.forward_backward(x, y)
        self.optimizer_step()
        return loss

    # ---- one epoch ------------------------------------------------------------
    def prepare_epoch(self, epoch: int) -> None:
        from vitcli.models.factory import set_backbone_trainable

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
        """Train from the current position in `epoch` to its end.

        Returns:
            train_loss (mean over the epoch's samples, all ranks), images_per_s, epoch_time_s and
            whatever the criterion reports (distillation: teacher ms per step).
        """
        tcfg = self.cfg.trainer
        self.prepare_epoch(epoch)
        bar = EpochProgress(self.progress_mode, epoch, tcfg.epochs, self.batches_per_epoch, tcfg.log_interval,
                            self.batch_in_epoch)
        t0, seen_now = time.perf_counter(), 0
        try:
            for i, (x, y) in enumerate(self.train_loader, start=self.batch_in_epoch):
                loss = self.forward_backward(x, y)
                self.window.add(loss, y.shape[0])
                seen_now += y.shape[0]
                self.batch_in_epoch = i + 1
                bar.advance(i)
                if self.batch_in_epoch % tcfg.grad_accum and self.batch_in_epoch != self.batches_per_epoch:
                    continue
                self.optimizer_step()
                if self.global_step % tcfg.log_interval == 0:
                    self.log_point(epoch, bar, seen_now / max(time.perf_counter() - t0, 1e-9))
                if tcfg.ckpt_interval_steps and self.global_step % tcfg.ckpt_interval_steps == 0 \
                        and self.batch_in_epoch < self.batches_per_epoch:
                    self.window.read(epoch, self.global_step)  # never checkpoint a non-finite state
                    self.save_last()
                if interrupts.requested() and self.batch_in_epoch < self.batches_per_epoch:
                    raise interrupts.TrainingInterrupted(interrupts.requested(), f"in epoch {epoch + 1} at batch "
                                                         f"{self.batch_in_epoch} of {self.batches_per_epoch}")
        finally:
            bar.close()
        elapsed = time.perf_counter() - t0
        self.train_images += seen_now
        self.train_seconds += elapsed
        loss_sum, seen = self.window.read(epoch, self.global_step)
        self.window.reset(step=self.global_step)
        stats = {"train_loss": loss_sum / max(seen, 1), "images_per_s": seen_now / max(elapsed, 1e-9),
                 "epoch_time_s": elapsed}
        # criteria may report their own per-epoch figures (e.g. distillation: teacher ms per step)
        stats.update(getattr(self.criterion, "epoch_stats", dict)())
        return stats

    def log_point(self, epoch: int, bar: EpochProgress, images_per_s: float) -> None:
        """Read the loss back from the device (the only read between epoch ends) and log it."""
        loss = self.window.read_since_log(epoch, self.global_step)
        lr = self.optimizer.param_groups[-1]["lr"]
        bar.show(self.batch_in_epoch - 1, loss, lr, images_per_s)
        self.metrics.log({"kind": "step", "epoch": epoch + 1, "global_step": self.global_step,
                          "train_loss": loss, "lr": lr, "images_per_s": images_per_s})

    # ---- the run --------------------------------------------------------------
    def validate(self) -> tuple[dict[str, Any], str | None]:
        """Evaluate raw (and EMA) weights on the selection split; update self.best.

        Returns:
            the record for metrics.jsonl, and "model"/"ema" when that copy improved on the best (else None).
        """
        from vitcli.engine.evaluate import evaluate

        val = evaluate(self.model, self.val_loader, self.runtime)
        record = {"val_top1": val["top1"], "val_top5": val["top5"], "val_loss": val["loss"]}
        candidates = [("model", val)]
        if self.ema is not None:
            ema_val = evaluate(self.ema.module, self.val_loader, self.runtime)
            record.update(ema_top1=ema_val["top1"], ema_top5=ema_val["top5"], ema_loss=ema_val["loss"])
            candidates.append(("ema", ema_val))
        source, metrics = max(candidates, key=lambda c: c[1]["top1"])
        if self.best and metrics["top1"] <= self.best["val_top1"]:
            return record, None
        self.best = {"epoch": self.epoch, "val_top1": metrics["top1"], "val_top5": metrics["top5"],
                     "val_loss": metrics["loss"], "source": source}
        return record, source

    def fit(self) -> dict[str, Any]:
        """Train every remaining epoch (resuming from last.pt when the run dir has one).

        Returns:
            the run's summary (also written to summary.json), with status completed.
        """
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
        self.write_summary("running")
        try:
            # DDP ranks keep torchrun's handling: stopping at different steps would hang the others
            with interrupts.stop_requests(enabled=self.runtime.world_size == 1):
                for epoch in range(self.epoch, epochs):
                    self.run_epoch(epoch)
                    if interrupts.requested() and epoch + 1 < epochs:  # at an epoch end: last.pt is saved
                        raise interrupts.TrainingInterrupted(interrupts.requested(), f"after epoch {epoch + 1}")
        except interrupts.TrainingInterrupted:
            self.window.read(self.epoch, self.global_step)  # the loss totals last.pt records (and a finite state)
            self.save_last()  # the state after the last whole step: a rerun resumes from it exactly
            self.finish("interrupted")
            raise
        except KeyboardInterrupt:
            self.finish("interrupted")
            raise
        except Exception as err:
            self.finish("failed", str(err).splitlines()[0] if str(err) else type(err).__name__)
            raise
        self.export()
        summary = self.finish("completed")
        best = self.best
        log.info(f"done: best val_top1 {best['val_top1']:.2f} (epoch {best['epoch']}, {best['source']} weights) "
                 f"in {summary['wall_time_s']:.0f}s; {self.run_dir}")
        return summary

    def run_epoch(self, epoch: int) -> None:
        """Train one epoch, validate, record it, checkpoint, redraw the curves."""
        train_stats = self.train_one_epoch(epoch)
        self.epoch, self.batch_in_epoch = epoch + 1, 0
        val_record, improved = self.validate()
        self.scheduler.step(self.epoch, val_record["val_top1"])  # per-epoch schedules (plateau); others ignore it
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
        self.write_summary("running")
        self.draw_curves()
