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
from omegaconf import OmegaConf

from vitcli.core import phases, runs, startup_gc
from vitcli.core.io import write_text
from vitcli.core.runtime import Runtime
from vitcli.data.mixing import mix_batch
from vitcli.launch import interrupts, slurm
from vitcli.engine.build import accumulation_group, build_parts
from vitcli.engine.epoch_report import epoch_line, eval_interval, evaluates, print_phases, val_keys
from vitcli.launch.comm import broadcast_from_main, max_over_ranks
from vitcli.engine.evaluate import evaluate
from vitcli.engine.loss_window import LossWindow
from vitcli.engine.progress import EpochProgress, choose_mode
from vitcli.engine.run_state import RunState
from vitcli.launch.runlock import check_one_run
from vitcli.engine.stopping import SignalStop, StopDecision, create_stoppers, replay
from vitcli.engine.tracking import MetricsLogger, NullMetrics
from vitcli.models.factory import set_backbone_trainable, set_train_mode

if TYPE_CHECKING:
    from vitcli.core.schema import TrainConfig

log = logging.getLogger("vitcli")


class Trainer:
    """Builds a run's parts from its config (engine/build.py) and fits them.

    Args:
        cfg: the composed train config (conf/train.yaml + overrides).
        run_dir: where checkpoints, metrics and the summary go (rank 0 writes).
        runtime: device, DDP rank and precision (default: built from cfg.trainer).

    >>> Trainer(cfg, Path("runs/demo")).fit()["best"]["val_top1"]  # doctest: +SKIP
    """

    def __init__(self, cfg: TrainConfig, run_dir: Path, runtime: Runtime | None = None):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.clock = phases.take()  # started with the command (or the sweep job): startup runs until the first step
        self.eval_interval = eval_interval(cfg.trainer)  # checked before anything is built
        self.runtime = runtime or Runtime.create(cfg.trainer.device, cfg.trainer.precision)
        main = self.runtime.is_main  # only rank 0 writes files, logs and draws progress
        self.progress_mode = choose_mode(cfg.trainer.progress) if main else "none"
        self.parts = build_parts(cfg, self.runtime)
        self.batches_per_epoch = len(self.parts.train_loader)
        self.window = LossWindow(self.runtime)
        metrics = MetricsLogger(self.run_dir, cfg) if main else NullMetrics()
        self.state = RunState(cfg, self.run_dir, self.parts, self.runtime, metrics, self.window,
                              OmegaConf.to_yaml(cfg, resolve=True), self.clock)
        self.stoppers = create_stoppers(cfg) if main else []
        self.signal_stop = SignalStop(self.runtime, len(self.parts.val_loader))
        # FSDP: every rank runs as many evaluation forwards as the one with the most batches
        self.eval_forwards = max_over_ranks(len(self.parts.val_loader)) if self.state.sharded else 0
        self.vote = self.signal_stop.vote  # signals: every rank stops at the same step
        self.state.summary_fields.update(slurm.summary_fields())  # job id, requeues, log files (under SLURM)
        startup_gc.resume()  # built: the collector, paused since the command started (cli.py), runs again

    # ---- one micro-batch / optimizer step -----------------------------------
    def forward_backward(self, x: torch.Tensor, y: torch.Tensor, group: int = 1) -> torch.Tensor:
        """Forward and backward of one micro-batch at the run's precision (MixUp/CutMix and noise first).

        Args:
            x: normalized inputs (N, 3, H, W) on the device. y: labels (N,).
            group: micro-batches accumulated into this optimizer step; the loss is divided by it.
        Returns:
            the detached loss, still on the device (nothing is read back here).
        """
        p = self.parts
        x, y = mix_batch(x, y, p.mixup, self.cfg.augmentation)
        if self.cfg.trainer.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.runtime.autocast():
            loss = p.criterion(x, p.forward_model(x), y)
        scaled = loss / group
        (p.scaler.scale(scaled) if p.scaler else scaled).backward()
        return loss.detach()

    def optimizer_step(self) -> None:
        """Clip, step (through the GradScaler for fp16), zero grads, advance the schedule and the EMA."""
        p, clip = self.parts, self.cfg.trainer.clip_grad
        if p.scaler is not None:
            if clip:
                p.scaler.unscale_(p.optimizer)
                torch.nn.utils.clip_grad_norm_(p.model.parameters(), clip)
            p.scaler.step(p.optimizer)
            p.scaler.update()
        else:
            if clip:
                torch.nn.utils.clip_grad_norm_(p.model.parameters(), clip)
            p.optimizer.step()
        p.optimizer.zero_grad(set_to_none=True)
        self.state.global_step += 1
        p.scheduler.step_update(num_updates=self.state.global_step)
        if p.ema is not None:
            p.ema.update(p.model, step=self.state.global_step)

    # ---- one epoch ------------------------------------------------------------
    def prepare_epoch(self, epoch: int) -> None:
        p, state = self.parts, self.state
        off = self.cfg.augmentation.mixup_off_epoch
        if p.mixup is not None:
            p.mixup.mixup_enabled = not (off and epoch >= off)
        frozen = epoch < self.cfg.trainer.freeze_backbone_epochs
        set_backbone_trainable(p.model, not frozen)
        if frozen and state.batch_in_epoch == 0:
            log.info(f"epoch {epoch + 1}: backbone frozen, training the classifier only")
        set_train_mode(p.model)  # a LoRA model's frozen BatchNorms stay in eval mode
        p.train_loader.set_epoch(epoch, state.batch_in_epoch)

    def train_one_epoch(self, epoch: int) -> dict[str, Any]:
        """Train from the current position in `epoch` to its end.

        Returns:
            train_loss (mean over the epoch's samples, all ranks), images_per_s, epoch_time_s and
            whatever the criterion reports (distillation: teacher ms per step).
        """
        tcfg, state, n = self.cfg.trainer, self.state, self.batches_per_epoch
        self.prepare_epoch(epoch)
        bar = EpochProgress(self.progress_mode, epoch, tcfg.epochs, n, tcfg.log_interval, state.batch_in_epoch)
        t0, seen_now = time.perf_counter(), 0
        try:
            for i, (x, y) in enumerate(self.timed_batches(), start=state.batch_in_epoch):
                loss = self.forward_backward(x, y, accumulation_group(i, n, tcfg.grad_accum))
                self.window.add(loss, y.shape[0])
                seen_now += y.shape[0]
                state.batch_in_epoch = i + 1
                bar.advance(i)
                if state.batch_in_epoch % tcfg.grad_accum and state.batch_in_epoch != n:
                    continue
                self.optimizer_step()
                if state.global_step % tcfg.log_interval == 0:
                    self.log_point(epoch, bar, seen_now / max(time.perf_counter() - t0, 1e-9))
                if tcfg.ckpt_interval_steps and state.global_step % tcfg.ckpt_interval_steps == 0 \
                        and state.batch_in_epoch < n:
                    self.window.read(epoch, state.global_step)  # never checkpoint a non-finite state
                    state.save_last()  # timed as checkpoint (RunState.save)
                if self.vote.poll() and state.batch_in_epoch < n:
                    raise interrupts.TrainingInterrupted(self.vote.signum, f"in epoch {epoch + 1} at batch "
                                                         f"{state.batch_in_epoch} of {n}")
        finally:
            bar.close()
        elapsed = time.perf_counter() - t0
        state.train_images += seen_now
        state.train_seconds += elapsed
        loss_sum, seen = self.window.read(epoch, state.global_step)  # kept until the epoch's evaluation is done
        stats = {"train_loss": loss_sum / max(seen, 1), "images_per_s": seen_now / max(elapsed, 1e-9),
                 "epoch_time_s": elapsed}
        # criteria may report their own per-epoch figures (e.g. distillation: teacher ms per step)
        stats.update(getattr(self.parts.criterion, "epoch_stats", dict)())
        return stats

    def timed_batches(self) -> Any:
        """The train loader's batches, the wait for each timed as data_wait and the rest as step."""
        self.clock.switch("data_wait")
        for batch in self.parts.train_loader:
            self.clock.switch("step")
            yield batch
            self.clock.switch("data_wait")
        self.clock.switch("step")

    def log_point(self, epoch: int, bar: EpochProgress, images_per_s: float) -> None:
        """Read the loss back from the device (the only read between epoch ends) and log it."""
        step = self.state.global_step
        loss = self.window.read_since_log(epoch, step)  # the sync: the device's queued steps finish here (step)
        lr = self.parts.optimizer.param_groups[-1]["lr"]
        with self.clock.phase("plots_logging", count=False):
            bar.show(self.state.batch_in_epoch - 1, loss, lr, images_per_s)
            self.state.metrics.log({"kind": "step", "epoch": epoch + 1, "global_step": step, "train_loss": loss,
                                    "lr": lr, "images_per_s": images_per_s})

    # ---- the run --------------------------------------------------------------
    def validate(self) -> tuple[dict[str, Any], str | None]:
        """Evaluate raw (and EMA) weights on the selection split; update the best result.

        Returns:
            the record for metrics.jsonl, and "model"/"ema" when that copy improved on the best (else None).
        """
        p, state = self.parts, self.state
        stop = self.signal_stop.in_evaluation(state, self.batches_per_epoch)  # a stop signal ends it early
        val = evaluate(p.model, p.val_loader, self.runtime, stop=stop, forwards=self.eval_forwards)
        record = {"val_top1": val["top1"], "val_top5": val["top5"], "val_loss": val["loss"]}
        candidates = [("model", val)]
        if p.ema is not None:
            ema_val = evaluate(p.ema.module, p.val_loader, self.runtime, stop=stop, forwards=self.eval_forwards)
            record.update(ema_top1=ema_val["top1"], ema_top5=ema_val["top5"], ema_loss=ema_val["loss"])
            candidates.append(("ema", ema_val))
        source, metrics = max(candidates, key=lambda c: c[1]["top1"])
        if state.best and metrics["top1"] <= state.best["val_top1"]:
            return record, None
        state.best = {"epoch": state.epoch, "val_top1": metrics["top1"], "val_top5": metrics["top5"],
                      "val_loss": metrics["loss"], "source": source}
        return record, source

    def fit(self) -> dict[str, Any]:
        """Train every remaining epoch (resuming from last.pt when the run dir has one), or until a
        stopper (engine/stopping.py) ends the run.

        Returns:
            the run's summary (also written to summary.json): status completed, or the stopper's.
        """
        state = self.state
        if not self.cfg.resume:  # same command, same dir: resume; another config: refuse
            check_one_run(self.run_dir, state.config_yaml)
        if self.runtime.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_text(self.run_dir / runs.CONFIG, state.config_yaml)  # atomic: the other ranks check it too
            state.write_class_counts()
        # a rerun of a run that a stopper ended stays ended (engine/stopping.py: how to train on)
        stop: StopDecision | None = replay(self.stoppers, state.history) if state.maybe_resume() else None
        stop = broadcast_from_main(stop) if self.runtime.distributed else stop
        epochs = self.cfg.trainer.epochs
        data = self.parts.data
        log.info(
            f"training {self.cfg.model.name} ({self.parts.num_params / 1e6:.2f}M params) on {self.cfg.data.name} "
            f"({data.info.get('train_samples')} train / {data.info.get('val_samples')} val) "
            f"for {epochs} epochs on {self.runtime.device}; run dir {self.run_dir}"
        )
        state.write_summary("running")
        # until the run is saved and handed back, a (repeated) stop signal only raises the flag
        with interrupts.stop_requests():
            try:
                for epoch in range(state.epoch, epochs if stop is None else state.epoch):
                    stop = self.run_epoch(epoch)
                    if stop is not None:
                        break
                    if self.vote.settle() and epoch + 1 < epochs:  # at an epoch end: last.pt is saved
                        raise interrupts.TrainingInterrupted(self.vote.signum, f"after epoch {epoch + 1}")
            except interrupts.TrainingInterrupted as err:
                self.signal_stop.save(err, state, self.window, self.run_dir)
                raise
            except KeyboardInterrupt:
                state.finish("interrupted")
                raise
            except Exception as err:
                state.finish("failed", str(err).splitlines()[0] if str(err) else type(err).__name__)
                raise
        self.clock.switch("teardown")
        state.export()
        if stop is not None:
            state.summary_fields["stopped"] = stop.record(state.epoch)
            log.info(f"stopped after epoch {state.epoch} of {epochs} ({stop.by}): {stop.reason}")
        summary = state.finish(stop.status if stop is not None else "completed")
        best = state.best
        if self.runtime.is_main:
            print_phases(summary)
        log.info(f"done: best val_top1 {best['val_top1']:.2f} (epoch {best['epoch']}, {best['source']} weights) "
                 f"in {summary['wall_time_s']:.0f}s; {self.run_dir}")
        return summary

    def run_epoch(self, epoch: int) -> StopDecision | None:
        """Train one epoch; on evaluated epochs (trainer.eval_interval) validate; record it, checkpoint,
        redraw the curves (at a bounded rate); ask the stoppers (on evaluated epochs: they count evaluations)."""
        state, p = self.state, self.parts
        train_stats = self.train_one_epoch(epoch)
        state.epoch, state.batch_in_epoch = epoch + 1, 0
        evaluated = evaluates(state.epoch, self.cfg.trainer.epochs, self.eval_interval)
        if evaluated:
            with self.clock.phase("eval"):
                val_record, improved = self.validate()
        else:  # the same columns every epoch (metrics.csv), empty until the next evaluation
            val_record, improved = dict.fromkeys(val_keys(p.ema is not None)), None
        self.window.reset(step=state.global_step)  # recorded: the next epoch's totals start here
        p.scheduler.step(state.epoch, val_record["val_top1"])  # per-epoch schedules (plateau; None: no step)
        record = {"epoch": state.epoch, **train_stats, **val_record, "lr": p.optimizer.param_groups[-1]["lr"]}
        state.history.append(record)
        with self.clock.phase("plots_logging", count=False):
            state.metrics.log_epoch(record)
        state.save(improved)
        with self.clock.phase("plots_logging"):
            log.info(epoch_line(record, self.cfg.trainer.epochs, improved))
            state.write_summary("running")
            state.draw_curves(left_s=state.seconds_left(self.cfg.trainer.epochs))
        return self.ask_stoppers(record) if evaluated else None

    def ask_stoppers(self, record: dict[str, Any]) -> StopDecision | None:
        """The first stopper's decision (rank 0 asks; every rank gets its answer)."""
        decision = next((d for s in self.stoppers if (d := s.after_epoch(self.state.epoch, record)) is not None),
                        None)
        return broadcast_from_main(decision) if self.runtime.distributed else decision
