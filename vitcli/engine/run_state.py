"""What a run carries between processes and leaves on disk: its position, best result and
RNGs in checkpoints, summary.json, plots/curves.png and model.safetensors. A mixin of `Trainer`."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from vitcli.core import runs
from vitcli.core.checkpoint import load_checkpoint, save_checkpoint, save_safetensors
from vitcli.core.rng import rng_state, set_rng_state
from vitcli.core.io import read_jsonl, write_json

log = logging.getLogger("vitcli")

COUNTERS = ("epoch", "batch_in_epoch", "global_step", "train_images")


class RunState:
    """Position, best result and throughput of a run, saved in and restored from checkpoints."""

    def init_state(self) -> None:
        self.epoch = 0  # epochs completed
        self.batch_in_epoch = 0  # micro-batches done in the current epoch (mid-epoch checkpoints)
        self.global_step = 0  # optimizer steps
        self.best: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.train_images, self.train_seconds = 0, 0.0
        self.wall_start = time.time()

    def state_dict(self) -> dict[str, Any]:
        """Everything exact resume needs, as plain tensors and numbers (loadable with weights_only=True).

        The epoch's loss totals are those of the last read of the loss window: every save point
        reads it first (that read is also the check that the state is finite).
        """
        loss_sum, seen = self.window.totals
        state = {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "epoch_loss_sum": loss_sum, "epoch_seen": seen,
            **{key: getattr(self, key) for key in COUNTERS},
            "best": dict(self.best), "config": self.config_yaml, "class_names": list(self.data.class_names),
            "num_classes": self.data.num_classes, "rng": rng_state(), "train_seconds": self.train_seconds,
        }
        if self.ema is not None:
            state["model_ema"] = self.ema.module.state_dict()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        wandb = getattr(self.metrics, "wandb", None)
        if wandb is not None and wandb.run_id:
            state["wandb_run_id"] = wandb.run_id
        if self.scheduler.t_in_epochs:  # plateau: its state follows the metric, not the step count
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None and "model_ema" in state:
            self.ema.module.load_state_dict(state["model_ema"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        for key in COUNTERS:
            setattr(self, key, int(state.get(key, 0)))
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.best = dict(state.get("best") or {})
        set_rng_state(state["rng"])
        if "scheduler" in state and self.scheduler.t_in_epochs:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scheduler.step_update(num_updates=self.global_step)
        self.window.reset(float(state.get("epoch_loss_sum", 0.0)), int(state.get("epoch_seen", 0)), self.global_step)

    def maybe_resume(self) -> bool:
        """Continue from checkpoints/last.pt when the run dir has one (metrics after it are dropped)."""
        last = runs.checkpoint_path(self.run_dir, "last")
        if not last.is_file():
            return False
        state = load_checkpoint(last, map_location=self.runtime.device)
        self.load_state_dict(state)
        if getattr(self.metrics, "wandb", None) is not None:
            self.metrics.wandb.restore_id(state.get("wandb_run_id"))
        self.metrics.truncate_after(self.epoch, self.global_step)
        self.history = [{k: v for k, v in r.items() if k != "kind"} for r in read_jsonl(self.metrics.jsonl)
                        if r.get("kind") == "epoch"]
        where = f"epoch {self.epoch + 1} batch {self.batch_in_epoch}" if self.batch_in_epoch else f"epoch {self.epoch}"
        log.info(f"resumed from {last} after {where} (step {self.global_step})")
        return True

    def summary(self, status: str, error: str | None = None) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "status": status, "error": error, "experiment": cfg.name, "model": cfg.model.name,
            "timm_name": cfg.model.timm_name, "data": cfg.data.name, "num_classes": self.data.num_classes,
            "num_params": self.num_params, "device": str(self.runtime.device), "precision": self.runtime.precision,
            "lr": self.parts.lr, "epochs": cfg.trainer.epochs, "epochs_completed": self.epoch,
            "selection_split": self.select_split, "global_step": self.global_step,
            "best": self.best, "final": self.history[-1] if self.history else {},
            "wall_time_s": round(time.time() - self.wall_start, 3),
            "train_images_per_s": self.train_images / self.train_seconds if self.train_seconds else None,
            **self.data.info,
        }

    def write_summary(self, status: str, error: str | None = None, summary: dict[str, Any] | None = None) -> None:
        if self.main:
            write_json(self.run_dir / runs.SUMMARY, summary or self.summary(status, error))

    def save_last(self) -> None:
        if self.main:
            save_checkpoint(self.state_dict(), runs.checkpoint_path(self.run_dir, "last"))

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

    def draw_curves(self) -> None:
        """plots/curves.png from metrics.jsonl, redrawn every epoch; a plot never fails a run."""
        if self.main:
            from vitcli.viz.plots import try_plot_curves

            try_plot_curves(self.run_dir)

    def finish(self, status: str, error: str | None = None) -> dict[str, Any]:
        summary = self.summary(status, error)
        if self.main:
            self.write_summary(status, error, summary)
            self.draw_curves()
            self.metrics.finish(summary)
        return summary

    def export(self) -> None:
        if not self.cfg.trainer.export_safetensors or not self.main:
            return
        best = load_checkpoint(runs.checkpoint_path(self.run_dir, "best"))
        save_safetensors(best["model"], self.run_dir / runs.MODEL_WEIGHTS,
                           {"timm_name": self.cfg.model.timm_name, "num_classes": str(self.data.num_classes),
                            "class_names": json.dumps(list(self.data.class_names)),
                            "source": str(self.best.get("source")), "epoch": str(self.best.get("epoch"))})
