"""What a run carries between processes and leaves on disk: its position (epoch, batch, step),
best result and throughput, saved with every RNG and the identity of its data (data/module.py)
in checkpoints, and summary.json, plots/curves.png and model.safetensors written from it.

A run that resumes compares the data it is given with the identity last.pt records (class
names; per split the samples, their labels and their order) before anything is loaded or written.

`RunState` is handed everything it reads (the config, the run's built parts, the runtime,
the metrics logger and the loss window); the loop advances its counters.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitcli.core import malloc_tuning, phases, runs
from vitcli.core.checkpoint import BEST_WEIGHTS, best_entry, load_checkpoint, save_safetensors
from vitcli.core.io import read_jsonl, write_csv, write_json
from vitcli.core.rng import rng_state, set_rng_state
from vitcli.core.runtime import Runtime
from vitcli.data.balance import counts_table
from vitcli.data.module import IDENTITY_KEY, check_data, data_identity, describe_data
from vitcli.launch import comm
from vitcli.engine import fsdp_state
from vitcli.engine.checkpoints import Checkpointer
from vitcli.engine.loss_window import LossWindow
from vitcli.models.lora import (
    base_hash,
    check_base_hash,
    is_lora,
    load_model_state,
    model_state_dict,
    trainable_params,
)
from vitcli.models.run_model import load_run_model
from vitcli.viz.plots import try_plot_curves

if TYPE_CHECKING:
    from vitcli.engine.build import TrainParts

log = logging.getLogger("vitcli")

COUNTERS = ("epoch", "batch_in_epoch", "global_step", "train_images")
# a redraw of plots/curves.png takes a fraction of a second of the training thread: at most this often
# mid-run (and always at the end), so short epochs are not slowed by it
CURVES_EVERY_S = 30.0


class RunState:
    """A run's position, best result and throughput, and the files that record them.

    Args:
        cfg: the run's config (written into checkpoints and summary.json).
        run_dir: the run directory; only the main rank writes into it.
        parts: the built model, optimizer, schedule, EMA, scaler and data (engine/build.py).
        runtime: device, rank and precision.
        metrics: where epoch records go (MetricsLogger, or NullMetrics off rank 0).
        window: the loop's loss totals; every save reads it first (a finite state).
    """

    def __init__(self, cfg: Any, run_dir: Path, parts: TrainParts, runtime: Runtime, metrics: Any,
                 window: LossWindow, config_yaml: str, clock: phases.PhaseClock | None = None):
        self.cfg, self.run_dir, self.parts, self.runtime = cfg, Path(run_dir), parts, runtime
        self.metrics, self.window, self.config_yaml = metrics, window, config_yaml
        self.main = runtime.is_main
        self.clock = clock or phases.PhaseClock()  # where the wall time went (summary.json's phases)
        # when plots/curves.png was last redrawn (time.monotonic): the first mid-run redraw comes
        # CURVES_EVERY_S after the run starts (one point after the first epoch tells little)
        self.curves_drawn = time.monotonic()
        self.pace: tuple[int, float] | None = None  # (epoch, time.monotonic()) that seconds_left measures from
        self.epoch = 0  # epochs completed
        self.batch_in_epoch = 0  # micro-batches done in the current epoch (mid-epoch checkpoints)
        self.global_step = 0  # optimizer steps
        self.best: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.train_images, self.train_seconds = 0, 0.0
        self.wall_start = time.time()
        self.summary_fields: dict[str, Any] = {}  # extra summary.json entries (e.g. why the run stopped)
        self.trainable_params = trainable_params(parts.model)
        self.lora_base_hash = base_hash(parts.model) if is_lora(parts.model) else None
        self.data_identity = data_identity(parts.data)  # written into every checkpoint
        self.sharded = str(cfg.trainer.get("strategy", "ddp")) == "fsdp"
        self.checkpoints = Checkpointer(self.run_dir, runtime.rank, self.sharded,
                                        background=bool(cfg.trainer.get("async_checkpoints", True)))
        self.resume_from = self.checked_last()

    def checked_last(self) -> dict[str, Any] | None:
        """The last checkpoint when the run dir has one, after checking that the data it was trained on
        is the data given now (what training reads: train and the validation splits, in the same order)."""
        state = self.checkpoints.read_last(self.runtime.device)
        if state is None:
            return None
        data = self.parts.data
        check_data(state, data, [s for s in data.loaders if s != "test"], str(self.checkpoints.last_path()),
                   describe_data(self.cfg.data), str(self.cfg.get("data_check", "strict")), order=True,
                   fix="restore the data it was trained on, or train a new run on the new data")
        return state

    # ---- checkpoints ------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        """The run's position, best result, config and data identity: what a checkpoint holds besides
        tensors (JSON-able: a sharded checkpoint keeps it in state.json).

        The epoch's loss totals are those of the last read of the loss window: every save point
        reads it first (that read is also the check that the state is finite)."""
        p = self.parts
        loss_sum, seen = self.window.totals
        meta = {"epoch_loss_sum": loss_sum, "epoch_seen": seen, **{key: getattr(self, key) for key in COUNTERS},
                "best": dict(self.best), "config": self.config_yaml, "class_names": list(p.data.class_names),
                "num_classes": p.data.num_classes, IDENTITY_KEY: self.data_identity,
                "train_seconds": self.train_seconds, "world_size": self.runtime.world_size}
        if is_lora(p.model):  # the frozen base is rebuilt from the config on load and must hash the same
            meta["lora_base_hash"] = self.lora_base_hash
        wandb = getattr(self.metrics, "wandb", None)
        if wandb is not None and wandb.run_id:
            meta["wandb_run_id"] = wandb.run_id
        if p.scheduler.t_in_epochs:  # plateau: its state follows the metric, not the step count
            meta["scheduler"] = p.scheduler.state_dict()
        return meta

    def state_dict(self, rank_rngs: list[Any] | None = None) -> dict[str, Any]:
        """Everything exact resume needs, as plain tensors and numbers (loadable with weights_only=True).

        Args:
            rank_rngs: under DDP, every rank's RNG state (`gather_rngs()`): each rank resumes its own.
        """
        p = self.parts
        state = {**self.meta(), "model": model_state_dict(p.model), "optimizer": p.optimizer.state_dict(),
                 "rng": rng_state()}
        if p.ema is not None:
            state["model_ema"] = model_state_dict(p.ema.module)
        if p.scaler is not None:
            state["scaler"] = p.scaler.state_dict()
        if rank_rngs is not None:
            state["rank_rngs"] = rank_rngs
        return state

    def gather_rngs(self) -> list[Any] | None:
        """Every rank's RNG state on rank 0 (ranks seed and draw differently); None alone. A
        collective: every rank calls it at the same save point."""
        return comm.gather_to_main(rng_state()) if self.runtime.distributed else None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        p = self.parts
        if self.lora_base_hash is not None:  # the adapters were trained on this base (the weights file may have changed)
            check_base_hash(state.get("lora_base_hash"), self.lora_base_hash, "checkpoints/last.pt")
        if "sharded_path" in state:  # every rank loads its own shards (resharded from another world size)
            fsdp_state.restore(p, Path(state["sharded_path"]), self.runtime, int(state.get("world_size", 0)))
        else:
            load_model_state(p.model, state["model"], "checkpoints/last.pt")
            p.optimizer.load_state_dict(state["optimizer"])
            if p.ema is not None and "model_ema" in state:
                load_model_state(p.ema.module, state["model_ema"], "checkpoints/last.pt")
            if p.scaler is not None and "scaler" in state:
                p.scaler.load_state_dict(state["scaler"])
            rank_rngs = state.get("rank_rngs") or []
            set_rng_state(rank_rngs[self.runtime.rank] if len(rank_rngs) == self.runtime.world_size else state["rng"])
        for key in COUNTERS:
            setattr(self, key, int(state.get(key, 0)))
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.best = dict(state.get("best") or {})
        if "scheduler" in state and p.scheduler.t_in_epochs:
            p.scheduler.load_state_dict(state["scheduler"])
        p.scheduler.step_update(num_updates=self.global_step)
        self.window.reset(float(state.get("epoch_loss_sum", 0.0)), int(state.get("epoch_seen", 0)), self.global_step)

    def maybe_resume(self) -> bool:
        """Continue from the last checkpoint when the run dir has one (metrics after it are dropped)."""
        last, state = self.checkpoints.last_path(), self.resume_from
        if state is None:
            return False
        self.resume_from = None  # held only until loaded
        self.load_state_dict(state)
        if getattr(self.metrics, "wandb", None) is not None:
            self.metrics.wandb.restore_id(state.get("wandb_run_id"))
        self.metrics.truncate_after(self.epoch, self.global_step)
        self.history = [{k: v for k, v in r.items() if k != "kind"} for r in read_jsonl(self.metrics.jsonl)
                        if r.get("kind") == "epoch"]
        where = f"epoch {self.epoch + 1} batch {self.batch_in_epoch}" if self.batch_in_epoch else f"epoch {self.epoch}"
        log.info(f"resumed from {last} after {where} (step {self.global_step})")
        return True

    def save(self, improved_source: str | None = None) -> None:
        """Checkpoint the run (a collective: every rank calls it at the same point): last, and best too
        when this epoch improved (`improved_source`: "model" or "ema", whose weights are the best).
        One serialization: best is the same bytes as last, and says which entry holds the best weights."""
        with self.clock.phase("checkpoint"):
            self._save(improved_source)

    def _save(self, improved_source: str | None) -> None:
        best = {BEST_WEIGHTS: "model_ema" if improved_source == "ema" else "model",
                "best_source": improved_source} if improved_source else {}
        if self.sharded:
            meta = {**self.meta(), **best, "entries": ["model"] + (["model_ema"] if self.parts.ema else [])}
            self.checkpoints.save_shards(self.global_step, fsdp_state.tensors(self.parts), meta, rng_state(),
                                         best=bool(best))
            return
        rank_rngs = self.gather_rngs()
        if self.main:
            self.checkpoints.save_file({**self.state_dict(rank_rngs), **best}, best=bool(best))

    def save_last(self) -> None:
        self.save(None)

    def join_checkpoints(self, raise_error: bool = True) -> None:
        """Wait for the save in flight (timed as checkpoint): before an exit, a requeue or a read-back.
        A failed write is raised (or, when the run already failed, logged: it must not hide why)."""
        with self.clock.phase("checkpoint", count=False):
            try:
                self.checkpoints.join()
            except Exception as err:
                if raise_error:
                    raise
                log.warning(f"the last checkpoint write failed: {err}")

    # ---- summary, curves, exported weights ---------------------------------------
    def summary(self, status: str, error: str | None = None) -> dict[str, Any]:
        cfg, p = self.cfg, self.parts
        return {
            "status": status, "error": error, "experiment": cfg.name, "model": cfg.model.name,
            "timm_name": cfg.model.timm_name, "data": cfg.data.name, "num_classes": p.data.num_classes,
            "num_params": p.num_params, "trainable_params": self.trainable_params, "device": str(self.runtime.device), "precision": self.runtime.precision,
            "lr": p.lr, "epochs": cfg.trainer.epochs, "epochs_completed": self.epoch,
            "selection_split": p.select_split, "global_step": self.global_step,
            "best": self.best, "final": self.history[-1] if self.history else {},
            "wall_time_s": round(time.time() - self.wall_start, 3),
            "train_images_per_s": self.train_images / self.train_seconds if self.train_seconds else None,
            **p.data.info, **self.summary_fields, **self.clock.record(),
            "malloc_tuned": malloc_tuning.tuned(),  # the allocator kept the step's buffers (core/malloc_tuning.py)
        }

    def write_summary(self, status: str, error: str | None = None, summary: dict[str, Any] | None = None) -> None:
        if self.main:
            write_json(self.run_dir / runs.SUMMARY, summary or self.summary(status, error))

    def draw_curves(self, force: bool = False, left_s: float | None = None) -> None:
        """plots/curves.png from metrics.jsonl, redrawn at most every CURVES_EVERY_S seconds (always
        when `force`: at the end, on a stop), and not when the run expects to end (`left_s`, its
        estimate) sooner than that: the end's redraw follows. A plot never fails a run."""
        due = time.monotonic() - self.curves_drawn >= CURVES_EVERY_S and not (left_s is not None
                                                                              and left_s < CURVES_EVERY_S)
        if self.main and (force or due):
            try_plot_curves(self.run_dir)
            self.curves_drawn = time.monotonic()

    def seconds_left(self, epochs: int) -> float | None:
        """The time the remaining epochs should take at the pace of this process's epochs since the
        first call (an epoch end; None until a later epoch end can tell)."""
        if self.pace is None:
            self.pace = (self.epoch, time.monotonic())
        done = self.epoch - self.pace[0]
        return None if done <= 0 else (time.monotonic() - self.pace[1]) / done * (epochs - self.epoch)

    def finish(self, status: str, error: str | None = None) -> dict[str, Any]:
        """The run ends (any status): the save in flight joined, curves redrawn, summary.json written last
        (its phases end here), trackers told."""
        self.join_checkpoints(raise_error=status != "failed")
        if self.main:
            with self.clock.phase("plots_logging", count=False):
                self.draw_curves(force=True)
        summary = self.summary(status, error)
        if self.main:
            self.write_summary(status, error, summary)
            self.metrics.finish(summary)
        return summary

    def export(self) -> None:
        """The best weights as model.safetensors, with the timm name and class names in its metadata."""
        self.join_checkpoints()
        if not self.cfg.trainer.export_safetensors or not self.main:
            return
        data = self.parts.data
        if self.sharded or is_lora(self.parts.model):  # whole again (shards gathered), adapters merged
            weights = load_run_model(self.run_dir, "best", device="cpu", precision="32")[1].state_dict()
        else:
            best = load_checkpoint(runs.checkpoint_path(self.run_dir, "best"))
            weights = best[best_entry(best)]
        save_safetensors(weights, self.run_dir / runs.MODEL_WEIGHTS,
                         {"timm_name": self.cfg.model.timm_name, "num_classes": str(data.num_classes),
                          "class_names": json.dumps(list(data.class_names)),
                          "source": str(self.best.get("source")), "epoch": str(self.best.get("epoch"))})

    def write_class_counts(self) -> None:
        """Log the train split's samples per class and write them to the run dir (class_counts.csv)."""
        data = self.parts.data
        counts = data.class_counts
        if counts is None:
            return
        log.info(f"train samples per class ({len(counts)} classes, {int(counts.min())}-{int(counts.max())} each): "
                 f"{counts_table(counts, data.class_names)}")
        write_csv(self.run_dir / runs.CLASS_COUNTS, [{"class": i, "name": name, "count": int(c)}
                                                     for i, (name, c) in enumerate(zip(data.class_names, counts))])
