"""The training loop: one `Trainer` per run directory."""

from __future__ import annotations

import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitcli import runs
from vitcli.engine.checkpoint import load_checkpoint, save_checkpoint
from vitcli.engine.evaluate import evaluate
from vitcli.engine.losses import create_criterion
from vitcli.engine.optim import create_optimizer, create_scheduler
from vitcli.engine.progress import EpochProgress, choose_mode
from vitcli.errors import UserError
from vitcli.tracking import MetricsLogger, write_json

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
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Builds data, model, optimizer and schedule from a train config and fits them."""

    def __init__(self, cfg: Any, run_dir: Path):
        from omegaconf import OmegaConf

        from vitcli.data import create_data
        from vitcli.models import count_params, create_model

        self.cfg = cfg
        self.run_dir = Path(run_dir)
        tcfg = cfg.trainer
        if tcfg.epochs <= 0:
            raise UserError(f"trainer.epochs={tcfg.epochs} must be at least 1")
        if tcfg.threads:
            torch.set_num_threads(tcfg.threads)
        self.device = resolve_device(tcfg.device)
        self.progress_mode = choose_mode(tcfg.progress)
        seed_everything(tcfg.seed)

        self.data = create_data(cfg, device=str(self.device))
        self.train_loader = self.data.loader("train")
        self.val_loader = self.data.loader("val")
        self.model = create_model(cfg.model, self.data.num_classes, cfg.regularization).to(self.device)
        self.num_params = count_params(self.model)
        self.optimizer = create_optimizer(self.model, cfg.optimizer, cfg.regularization.weight_decay)
        self.steps_per_epoch = len(self.train_loader)
        self.scheduler = create_scheduler(self.optimizer, cfg.scheduler, tcfg.epochs, self.steps_per_epoch)
        self.criterion = create_criterion(cfg, device=self.device, num_classes=self.data.num_classes,
                                          mean=list(cfg.data.mean), std=list(cfg.data.std))
        self.metrics = MetricsLogger(self.run_dir, cfg)
        self.config_yaml = OmegaConf.to_yaml(cfg, resolve=True)

        self.epoch = 0  # epochs completed
        self.global_step = 0
        self.best: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.train_images = 0
        self.train_seconds = 0.0
        self.wall_start = time.time()

    # ---- one optimizer step -------------------------------------------------
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = self.criterion(x, self.model(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.global_step += 1
        self.scheduler.step_update(num_updates=self.global_step)
        return loss.detach()

    def train_one_epoch(self, epoch: int) -> dict[str, Any]:
        self.model.train()
        self.train_loader.set_epoch(epoch)
        total = self.steps_per_epoch
        bar = EpochProgress(self.progress_mode, epoch, self.cfg.trainer.epochs, total, self.cfg.trainer.log_interval)
        loss_sum, seen = torch.zeros((), device=self.device), 0
        t0 = time.perf_counter()
        try:
            for step, (x, y) in enumerate(self.train_loader):
                loss = self.train_step(x, y)
                loss_sum += loss * y.shape[0]
                seen += y.shape[0]
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    raise NonFiniteLoss(
                        f"loss became {loss_value} at epoch {epoch + 1} step {step + 1}; the run stopped and "
                        "checkpoints/last.pt holds the last good epoch (lower optimizer.lr or add scheduler warmup)"
                    )
                elapsed = time.perf_counter() - t0
                lr = self.optimizer.param_groups[0]["lr"]
                bar.update(step, loss_value, lr, seen / max(elapsed, 1e-9))
                if (step + 1) % self.cfg.trainer.log_interval == 0:
                    self.metrics.log({"kind": "step", "epoch": epoch + 1, "global_step": self.global_step,
                                      "train_loss": loss_value, "lr": lr, "images_per_s": seen / max(elapsed, 1e-9)})
        finally:
            bar.close()
        elapsed = time.perf_counter() - t0
        self.train_images += seen
        self.train_seconds += elapsed
        stats = {"train_loss": (loss_sum / max(seen, 1)).item(), "images_per_s": seen / max(elapsed, 1e-9),
                 "epoch_time_s": elapsed}
        # criteria may report their own per-epoch figures (e.g. distillation: teacher ms per step)
        stats.update(getattr(self.criterion, "epoch_stats", dict)())
        return stats

    # ---- checkpoints ----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "best": dict(self.best),
            "config": self.config_yaml,
            "class_names": list(self.data.class_names),
            "num_classes": self.data.num_classes,
            "rng": {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
                    "python_pos": random.getstate()[2]},
            "train_images": self.train_images,
            "train_seconds": self.train_seconds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.best = dict(state.get("best") or {})
        self.train_images = int(state.get("train_images", 0))
        self.train_seconds = float(state.get("train_seconds", 0.0))
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        random.setstate((3, tuple(int(v) for v in rng["python"]), rng["python_pos"]))
        self.scheduler.step_update(num_updates=self.global_step)

    def maybe_resume(self) -> bool:
        last = runs.checkpoint_path(self.run_dir, "last")
        if not last.is_file():
            return False
        self.load_state_dict(load_checkpoint(last, map_location=self.device))
        self.metrics.truncate_after(self.epoch, self.global_step)
        self.history = [r for r in _epoch_records(self.run_dir) if r["epoch"] <= self.epoch]
        log.info(f"resumed from {last} at epoch {self.epoch} (step {self.global_step})")
        return True

    # ---- the loop -------------------------------------------------------------
    def summary(self, status: str, error: str | None = None) -> dict[str, Any]:
        final = self.history[-1] if self.history else {}
        return {
            "status": status,
            "error": error,
            "experiment": self.cfg.name,
            "model": self.cfg.model.name,
            "timm_name": self.cfg.model.timm_name,
            "data": self.cfg.data.name,
            "num_classes": self.data.num_classes,
            "num_params": self.num_params,
            "device": str(self.device),
            "epochs": self.cfg.trainer.epochs,
            "epochs_completed": self.epoch,
            "global_step": self.global_step,
            "best": self.best,
            "final": final,
            "wall_time_s": round(time.time() - self.wall_start, 3),
            "train_images_per_s": self.train_images / self.train_seconds if self.train_seconds else None,
            **self.data.info,
        }

    def finish(self, summary: dict[str, Any]) -> None:
        write_json(self.run_dir / runs.SUMMARY, summary)
        self.metrics.finish(summary)

    def fit(self) -> dict[str, Any]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / runs.CONFIG).write_text(self.config_yaml)
        self.maybe_resume()
        epochs = self.cfg.trainer.epochs
        log.info(
            f"training {self.cfg.model.name} ({self.num_params / 1e6:.2f}M params) on {self.cfg.data.name} "
            f"({self.data.info.get('train_samples')} train / {self.data.info.get('val_samples')} val) "
            f"for {epochs} epochs on {self.device}; run dir {self.run_dir}"
        )
        write_json(self.run_dir / runs.SUMMARY, self.summary("running"))
        try:
            for epoch in range(self.epoch, epochs):
                train_stats = self.train_one_epoch(epoch)
                val = evaluate(self.model, self.val_loader, self.device)
                self.epoch = epoch + 1
                record = {"epoch": self.epoch, **train_stats, "val_top1": val["top1"], "val_top5": val["top5"],
                          "val_loss": val["loss"], "lr": self.optimizer.param_groups[0]["lr"]}
                self.history.append(record)
                self.metrics.log_epoch(record)
                improved = not self.best or val["top1"] > self.best["val_top1"]
                if improved:
                    self.best = {"epoch": self.epoch, "val_top1": val["top1"], "val_top5": val["top5"],
                                 "val_loss": val["loss"], "source": "model"}
                state = self.state_dict()
                save_checkpoint(state, runs.checkpoint_path(self.run_dir, "last"))
                if improved:
                    save_checkpoint(state, runs.checkpoint_path(self.run_dir, "best"))
                log.info(
                    f"epoch {self.epoch}/{epochs}  train_loss {train_stats['train_loss']:.4f}  "
                    f"val_top1 {val['top1']:.2f}  val_top5 {val['top5']:.2f}  val_loss {val['loss']:.4f}  "
                    f"{train_stats['images_per_s']:,.0f} img/s" + ("  *best*" if improved else "")
                )
                write_json(self.run_dir / runs.SUMMARY, self.summary("running"))
        except KeyboardInterrupt:
            self.finish(self.summary("interrupted"))
            raise
        except Exception as err:
            self.finish(self.summary("failed", str(err).splitlines()[0] if str(err) else type(err).__name__))
            raise
        summary = self.summary("completed")
        self.finish(summary)
        log.info(
            f"done: best val_top1 {self.best['val_top1']:.2f} (epoch {self.best['epoch']}) in "
            f"{summary['wall_time_s']:.0f}s; {self.run_dir}"
        )
        return summary


def _epoch_records(run_dir: Path) -> list[dict[str, Any]]:
    from vitcli.tracking import read_jsonl

    return [{k: v for k, v in r.items() if k != "kind"} for r in read_jsonl(Path(run_dir) / "metrics.jsonl")
            if r.get("kind") == "epoch"]
