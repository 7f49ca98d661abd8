"""After training: the commands that read a run (eval, predict, probe, explain, ensemble) add what
they measured and wrote to the trackers that run was trained with, and a -m sweep's parent
records (MLflow's parent run, TensorBoard's hparams rows). Never fails the command."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vitcli.core import runs
from vitcli.engine.tracking.base import active_backends, one_line

log = logging.getLogger("vitcli")


def _attach_fn(backend: str) -> Any:
    if backend == "wandb":
        from vitcli.engine.tracking.wandb_tracker import attach
    elif backend == "mlflow":
        from vitcli.engine.tracking.mlflow_tracker import attach  # type: ignore[assignment]
    else:
        from vitcli.engine.tracking.tensorboard_tracker import attach  # type: ignore[assignment]
    return attach


def attach_to_run(run_dir: str | Path, command: str, metrics: dict[str, Any], files: list[Path],
                  tag: str | None = None, base: Path | None = None) -> None:
    """Add `metrics` (their top-level numbers, as <command>/<tag>/<name>) and `files` (artifacts at
    their path relative to the run dir, or to `base` for outputs kept elsewhere, such as an
    ensemble's folder; PNGs as images) to each tracker of the run at `run_dir`."""
    run_dir = Path(run_dir)
    try:
        cfg = runs.load_run_config(run_dir)
    except Exception:  # not a run we can read the trackers of: nothing to add to
        return
    for backend in active_backends(cfg):
        try:
            kwargs = {} if backend == "wandb" else {"base": base}
            _attach_fn(backend)(run_dir, cfg, command, metrics, [Path(f) for f in files], tag, **kwargs)
        except Exception as err:
            log.warning(f"{backend} logging of this {command} failed: {one_line(err)}")


def start_sweep(config: Any, sweep_dir: Path) -> None:
    """Before a -m sweep's jobs start: MLflow's parent run (jobs find it through the sweep dir)."""
    if "mlflow" in active_backends(config):
        try:
            from vitcli.engine.tracking.mlflow_sweep import start_sweep as start

            start(config, Path(sweep_dir))
        except Exception as err:
            log.warning(f"mlflow: no parent run for this sweep ({one_line(err)}); its jobs log on their own")


def finish_sweep(config: Any, sweep_dir: Path, rows: list[dict[str, Any]], keys: list[str], metric: str) -> None:
    """After a -m sweep: close MLflow's parent run; one TensorBoard hparams row per job."""
    backends = active_backends(config)
    if "mlflow" in backends:
        try:
            from vitcli.engine.tracking.mlflow_sweep import finish_sweep as finish

            finish(Path(sweep_dir), rows, metric)
        except Exception as err:
            log.warning(f"mlflow logging of the sweep summary failed: {one_line(err)}")
    if "tensorboard" in backends:
        try:
            from vitcli.engine.tracking.tensorboard_tracker import write_sweep_hparams

            write_sweep_hparams(rows, keys)
        except Exception as err:
            log.warning(f"tensorboard hparams of the sweep failed: {one_line(err)}")
