"""W&B (logger=wandb): a run in <run_dir>/wandb, online with an API key and offline otherwise;
the plots as images and model.safetensors as a model artifact; a resumed run continues the same
W&B run (its id is in wandb/run_id and in the checkpoints)."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from vitcli.core import runs
from vitcli.core.io import finite_or_none, write_text
from vitcli.engine.tracking.base import Tracker, epoch_scalars, numeric, step_scalars, sweep_job

log = logging.getLogger("vitcli")


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
    job = sweep_job()
    return f"{cfg.name}/{job['sweep_dir'].name}" if job else None


def wandb_id_file(run_dir: Path) -> Path:
    """Where a run keeps its W&B run id, so a resumed run (and its evals) find the same W&B run."""
    return Path(run_dir) / runs.WANDB / "run_id"


class WandbSink(Tracker):
    """Mirrors step and epoch records to a W&B run; started on the first record."""

    name = "wandb"

    def __init__(self, run_dir: Path, cfg: Any):
        super().__init__(run_dir, cfg)
        self.run: Any = None

    def _open(self) -> None:
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

    def _disable(self, err: BaseException) -> None:
        super()._disable(err)
        self.run = None

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

    def _log(self, data: dict[str, Any]) -> None:
        self.run.log({k: v for k, v in data.items() if v is not None})

    def _step(self, record: dict[str, Any]) -> None:
        self._log({"global_step": record.get("global_step"), **step_scalars(record)})

    def _epoch(self, record: dict[str, Any]) -> None:
        self._log({"epoch": record.get("epoch"), **epoch_scalars(record)})

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

    def _finish(self, summary: dict[str, Any]) -> None:
        run = self.run
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
        self.run = None


def attach(run_dir: Path, cfg: Any, command: str, metrics: dict[str, Any], files: list[Path],
           tag: str | None = None) -> None:
    """`vitcli eval` / `explain` / ... of a run trained with logger=wandb: one job_type=eval W&B run
    in the training run's project and group, holding the metrics (<command>/<name>) and images."""
    import wandb

    lc, run_dir = cfg.logger, Path(run_dir)
    id_file = wandb_id_file(run_dir)
    train_id = id_file.read_text().strip() if id_file.is_file() else None
    images = [p for p in files if p.suffix == ".png"]
    with wandb.init(project=lc.project, entity=lc.entity, group=lc.group or f"{cfg.name}/{run_dir.name}",
                    job_type="eval", name=f"{cfg.name}/{run_dir.name}/{command}", dir=str(run_dir),
                    mode=wandb_mode(lc.mode), reinit="finish_previous",
                    config={"run_dir": str(run_dir.resolve()), "train_run_id": train_id, "tag": tag},
                    settings=wandb.Settings(init_timeout=lc.init_timeout, console="off")) as run:
        run.log({**numeric(metrics, command), **{f"plots/{p.stem}": wandb.Image(str(p)) for p in images}})

