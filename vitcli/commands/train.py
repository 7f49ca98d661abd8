"""`vitcli train`: compose conf/train.yaml with overrides and fit one run (or a sweep with -m)."""

from __future__ import annotations

import importlib.util
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

import vitcli.core.config_store  # noqa: F401  (registers the schemas)
from hydra_plugins.vitcli_launcher import register as register_slurm_launcher
from vitcli.core import startup_gc
from vitcli.core.errors import UserError, install_hint, report_user_errors

register_slurm_launcher()  # hydra/launcher=slurm
log = logging.getLogger("vitcli")


def fit_run(cfg: DictConfig) -> float:
    import signal
    from contextlib import nullcontext

    from hydra.core.hydra_config import HydraConfig

    from vitcli.launch import interrupts, requeue, slurm, torchrun
    from vitcli.launch.runlock import run_lock

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    slurm_task = slurm.join_tasks_as_ranks()  # srun --ntasks=N: each task is one rank
    torchrun.check_devices(cfg, slurm_task)
    # one writer per run dir: rank 0, or the parent of trainer.devices=N's ranks. SLURM's time-limit
    # warning may come before training starts: it is kept and acted on at the first step.
    with run_lock(run_dir) if torchrun.takes_run_lock() else nullcontext(), \
            interrupts.stop_requests((signal.SIGUSR2,)):
        if cfg.resume:  # hydra.run.dir already points at the resumed run (conf/train.yaml; cli.py resolved it)
            from vitcli.core.runs import resume_config

            cfg = resume_config(cfg, list(hydra_cfg.overrides.task))
        require_logger(cfg)
        if torchrun.needs_relaunch(cfg):  # trainer.devices=N: N ranks through torchrun, this same run dir
            startup_gc.resume()  # this process builds no run: it waits for its ranks
            return torchrun.relaunch(cfg, run_dir, list(hydra_cfg.overrides.task), list(hydra_cfg.overrides.hydra))
        try:
            return fit_rank(cfg, run_dir, slurm_task)
        except interrupts.TrainingInterrupted as err:
            requeue.leave_if_requeued(err.plan, run_dir)  # trainer.devices=N's parent: ranks requeued the job
            raise


def require_logger(cfg: DictConfig) -> None:
    """logger=wandb without the wandb package: say how to install it before any work."""
    if cfg.logger.name == "wandb" and importlib.util.find_spec("wandb") is None:
        raise UserError(f"logger=wandb needs the wandb package: {install_hint('wandb')}; or train with logger=csv")


def next_steps(run_dir: str | Path) -> str:
    """What to run on a finished run, each command with the run's own path."""
    from vitcli.core.run_paths import display_path

    run = shlex.quote(display_path(Path(run_dir)))
    steps = [(f"vitcli eval run={run}", "metrics, per-class report, confusion matrix"),
             (f"vitcli predict run={run} split=test", "predictions (and the submission files for MiniPlaces)"),
             (f"vitcli predict run={run} images=DIR", "top-k classes of your own images"),
             (f"vitcli export run={run}", "a folder plain timm loads (format=onnx: an ONNX file)"),
             (f"vitcli explain run={run}", "where the model looks (attention rollout / Grad-CAM)")]
    width = max(len(command) for command, _ in steps)
    return "\n".join(["next:", *(f"  {command:<{width}}  # {what}" for command, what in steps)])


def fit_rank(cfg: DictConfig, run_dir: Path, slurm_task: Any = None) -> float:
    """One process: the whole run, or one DDP rank of it (under torchrun, or a task of an srun step)."""
    from vitcli.launch import comm, torchrun
    from vitcli.engine.trainer import Trainer

    with torchrun.rank_session(cfg.trainer.device, slurm_task):
        # a rank's error is recorded while the process group lives: once it closes, the peers fail
        # and torchrun may stop this rank before it could say why
        summary = torchrun.record_errors(lambda: Trainer(cfg, comm.shared_run_dir(run_dir)).fit())()
    return float(summary["best"]["val_top1"])


@report_user_errors
def run_training(cfg: DictConfig) -> float:
    from vitcli.launch.interrupts import TrainingInterrupted
    from vitcli.launch.torchrun import RELAUNCHED, RanksFailed

    try:
        best = fit_run(cfg)
    except RanksFailed as err:  # one line, with the failed rank's exit code
        print(f"vitcli: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except TrainingInterrupted as err:  # 130 (SIGINT) / 143 (SIGTERM), as a shell reports them
        if err.plan is not None and not os.environ.get(RELAUNCHED):  # rank 0, or trainer.devices=N's parent
            print(interrupted_line(err), file=sys.stderr)
        sys.exit(err.exit_code)
    if not os.environ.get(RELAUNCHED) and os.environ.get("RANK", "0") == "0":  # one process says it
        from hydra.core.hydra_config import HydraConfig

        log.info(next_steps(HydraConfig.get().runtime.output_dir))
    return best


def interrupted_line(err: Any) -> str:
    from hydra.core.hydra_config import HydraConfig

    from vitcli.launch.requeue import REQUEUED

    run_dir = HydraConfig.get().runtime.output_dir
    if err.plan.status == REQUEUED:
        return f"vitcli: {err}; checkpoints/last.pt saved; SLURM runs the job again and it resumes {run_dir}"
    return f"vitcli: {err}; checkpoints/last.pt saved; resume with: vitcli train resume={run_dir}"


@hydra.main(version_base="1.3", config_path="pkg://vitcli.conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from vitcli.search.sweep import in_multirun, run_sweep_job

    if in_multirun():  # a failed job is recorded and the sweep goes on
        return run_sweep_job(fit_run, cfg)
    return run_training(cfg)
