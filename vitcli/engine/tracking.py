"""Metric logging that is always on: metrics.jsonl (one object per record),
metrics.csv (epoch rows) and summary.json, all inside the run directory;
plus W&B (logger=wandb) as an optional sink that never stops training."""

from __future__ import annotations

import csv
import json
import logging
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from vitcli.core import runs
from vitcli.core.io import append_csv, append_jsonl, finite_or_none, write_text

log = logging.getLogger("vitcli")


class MetricsLogger:
    """Appends step and epoch records to metrics.jsonl and epoch rows to metrics.csv."""

    def __init__(self, run_dir: Path, cfg: Any = None):
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.jsonl = self.run_dir / runs.METRICS_JSONL
        self.csv = self.run_dir / runs.METRICS_CSV
        use_wandb = cfg is not None and cfg.get("logger") is not None and cfg.logger.get("name") == "wandb"
        self.wandb = WandbSink(self.run_dir, cfg) if use_wandb else None

    def log(self, record: dict[str, Any]) -> None:
        self._append(record)
        if self.wandb and record.get("kind") == "step":
            self.wandb.log_step(record)

    def _append(self, record: dict[str, Any]) -> None:
        append_jsonl(self.jsonl, record)

    def log_epoch(self, record: dict[str, Any]) -> None:
        self._append({"kind": "epoch", **record})
        if self.wandb:
            self.wandb.log_epoch(record)
        append_csv(self.csv, [record])

    def finish(self, summary: dict[str, Any]) -> None:
        """Called once when the run ends (completed, failed or interrupted)."""
        if self.wandb:
            self.wandb.finish(summary)

    def truncate_after(self, epoch: int, step: int) -> None:
        """On resume, drop records written after the checkpoint being resumed from."""
        if self.jsonl.exists():
            keep = []
            for line in self.jsonl.read_text().splitlines():
                rec = json.loads(line)
                if rec.get("kind") == "epoch" and rec.get("epoch", 0) > epoch:
                    continue
                if rec.get("kind") == "step" and rec.get("global_step", 0) > step:
                    continue
                keep.append(line)
            self.jsonl.write_text("".join(k + "\n" for k in keep))
        if self.csv.exists():
            with open(self.csv, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= epoch]
            self.csv.unlink()
            append_csv(self.csv, rows)


class NullMetrics:
    """What DDP ranks other than 0 log: nothing (rank 0 writes metrics, W&B and the summary)."""

    def __init__(self) -> None:
        self.jsonl = self.csv = Path(os.devnull)
        self.wandb = None

    def log(self, record: dict[str, Any]) -> None:
        pass

    log_epoch = log

    def finish(self, summary: dict[str, Any]) -> None:
        pass

    def truncate_after(self, epoch: int, step: int) -> None:
        pass


def wandb_mode(requested: str) -> str:
    """auto: online when an API key is configured (env or ~/.netrc), else offline, so a
    machine without credentials or network never prompts or waits."""
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
        if netrc.netrc().authenticators(host or "api.wandb.ai"):
            return "online"
    except (OSError, netrc.NetrcParseError):
        pass
    return "offline"


def _sweep_group(cfg: Any) -> str | None:
    """Jobs of one Hydra multirun share a W&B group: <experiment>/<sweep stamp>."""
    try:
        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            return f"{cfg.name}/{Path(hc.runtime.output_dir).parent.name}"  # the sweep dir (its stamp)
    except Exception:  # no Hydra context (tests, library use)
        pass
    return None


def wandb_id_file(run_dir: Path) -> Path:
    """Where a run keeps its W&B run id, so a resumed run (and its evals) find the same W&B run."""
    return Path(run_dir) / runs.WANDB / "run_id"


class WandbSink:
    """Mirrors step and epoch records to a W&B run in <run_dir>/wandb. Started lazily on the
    first record; any wandb failure logs one warning and turns the sink off."""

    def __init__(self, run_dir: Path, cfg: Any):
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.run = None
        self.failed = False

    def _start(self) -> Any:
        if self.run is not None or self.failed:
            return self.run
        try:
            import wandb
            from omegaconf import OmegaConf

            lc = self.cfg.logger
            mode = wandb_mode(lc.mode)
            config = OmegaConf.to_container(self.cfg, resolve=True)
            config["run_dir"] = str(self.run_dir.resolve())
            sweep = _sweep_group(self.cfg)  # sweep jobs: <experiment>/<stamp>/<job num>
            kwargs = dict(
                project=lc.project, entity=lc.entity, group=lc.group or sweep,
                tags=list(lc.tags or []), name=lc.run_name or f"{sweep or self.cfg.name}/{self.run_dir.name}",
                notes=lc.notes, config=config, dir=str(self.run_dir), job_type="train", reinit="finish_previous",
                settings=wandb.Settings(init_timeout=lc.init_timeout, console="off"),
            )
            run_id = self._saved_id()  # a resumed run continues the same W&B run
            if run_id:
                kwargs.update(id=run_id, resume="allow")
            try:
                self.run = wandb.init(mode=mode, **kwargs)
            except Exception as err:
                if mode != "online":
                    raise
                log.warning(f"wandb online init failed ({err}); logging offline (sync later with `wandb sync`)")
                self.run = wandb.init(mode="offline", **kwargs)
            self._save_id(self.run.id)
            self.run.define_metric("global_step")
            self.run.define_metric("train/*", step_metric="global_step")
            self.run.define_metric("epoch")
            for prefix in ("val/*", "epoch/*"):
                self.run.define_metric(prefix, step_metric="epoch")
        except Exception as err:
            self._disable(err)
        return self.run

    @property
    def id_file(self) -> Path:
        return wandb_id_file(self.run_dir)

    @property
    def run_id(self) -> str | None:
        """The W&B run's id once started (checkpoints carry it), else the one the run dir kept."""
        return self.run.id if self.run is not None else self._saved_id()

    def restore_id(self, run_id: str | None) -> None:
        """On resume: continue the W&B run the checkpoint names when the run dir lost its id file."""
        if run_id and not self._saved_id():
            self._save_id(run_id)

    def _saved_id(self) -> str | None:
        try:
            return self.id_file.read_text().strip() or None
        except OSError:
            return None

    def _save_id(self, run_id: str) -> None:
        write_text(self.id_file, run_id)

    def log_outputs(self) -> None:
        """The run's plots as images and model.safetensors as a model artifact (aliases best, latest)."""
        import wandb

        plots = sorted((self.run_dir / runs.PLOTS).glob("*.png"))
        if plots:
            self.run.log({f"plots/{p.stem}": wandb.Image(str(p)) for p in plots})
        weights = self.run_dir / runs.MODEL_WEIGHTS
        if weights.is_file():
            art = wandb.Artifact(f"model-{self.run.id}", type="model",
                                 metadata={"run_dir": str(self.run_dir.resolve()), "model": self.cfg.model.name})
            art.add_file(str(weights))
            self.run.log_artifact(art, aliases=["best", "latest"])

    @staticmethod
    def log_eval(run_dir: Path, cfg: Any, metrics: dict[str, Any], images: list[Path]) -> None:
        """`vitcli eval` / `explain` of a run trained with logger=wandb: one job_type=eval W&B run in
        the training run's project and group, holding the metrics and images; never fails the command."""
        if cfg.get("logger") is None or cfg.logger.get("name") != "wandb":
            return
        try:
            import wandb

            lc, run_dir = cfg.logger, Path(run_dir)
            id_file = wandb_id_file(run_dir)
            train_id = id_file.read_text().strip() if id_file.is_file() else None
            with wandb.init(project=lc.project, entity=lc.entity, group=lc.group or f"{cfg.name}/{run_dir.name}",
                            job_type="eval", name=f"{cfg.name}/{run_dir.name}/eval", dir=str(run_dir),
                            mode=wandb_mode(lc.mode), reinit="finish_previous",
                            config={"run_dir": str(run_dir.resolve()), "train_run_id": train_id},
                            settings=wandb.Settings(init_timeout=lc.init_timeout, console="off")) as run:
                run.log({**{f"eval/{k}": finite_or_none(v) for k, v in metrics.items() if isinstance(v, (int, float))},
                         **{f"plots/{p.stem}": wandb.Image(str(p)) for p in images}})
        except Exception as err:
            log.warning(f"wandb logging of this evaluation failed: {type(err).__name__}: {err}")

    def _disable(self, err: Exception) -> None:
        log.warning(f"wandb logging is off for this run: {type(err).__name__}: {err}")
        self.failed, self.run = True, None

    def _log(self, data: dict[str, Any]) -> None:
        run = self._start()
        if run is None:
            return
        try:
            run.log({k: v for k, v in data.items() if v is not None})
        except Exception as err:
            self._disable(err)

    def log_step(self, record: dict[str, Any]) -> None:
        data = {f"train/{k.removeprefix('train_')}": finite_or_none(v) for k, v in record.items()
                if k not in ("kind", "epoch", "global_step")}
        self._log({"global_step": record.get("global_step"), **data})

    def log_epoch(self, record: dict[str, Any]) -> None:
        data = {"epoch": record.get("epoch")}
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)):
                data[f"val/{key[4:]}" if key.startswith("val_") else f"epoch/{key}"] = finite_or_none(value)
        self._log(data)

    def finish(self, summary: dict[str, Any]) -> None:
        run = self._start()
        if run is None:
            return
        try:
            for key, value in (summary.get("best") or {}).items():
                run.summary[f"best/{key}"] = finite_or_none(value)
            for key in ("status", "error", "epochs_completed", "wall_time_s", "train_images_per_s", "num_params"):
                if summary.get(key) is not None:
                    run.summary[key] = finite_or_none(summary[key])
            run.summary["run_dir"] = str(self.run_dir.resolve())
            self.log_outputs()
            if summary.get("status") == "requeued":  # SLURM runs the job again; W&B shows it preempted
                run.mark_preempting()
            run.finish(exit_code=0 if summary.get("status") == "completed" else 1)
        except Exception as err:
            self._disable(err)
