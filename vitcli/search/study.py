"""The optuna study behind a sweep dir (written by vitcli's optuna sweeper): a one-line
summary, its plots in <sweep dir>/plots/, and a W&B run holding them when logger=wandb.

    >>> study = sweep_study(Path("runs/default/multirun/2026-12-01_12-00-00"))  # doctest: +SKIP
    >>> print(describe(study)); draw(study, sweep_dir)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from hydra_plugins.vitcli_optuna_sweeper.plots import write_study_plots
from vitcli.core.errors import EXIT_USER_ERROR, UserError, full_errors, install_hint
from vitcli.engine.pruning import DIRECTION, METRIC
from vitcli.engine.tracking import active_backends

log = logging.getLogger("vitcli")

OPTUNA_SWEEPER = "hydra_plugins.vitcli_optuna_sweeper.optuna_sweeper.OptunaSweeper"


def check_direction(config: Any) -> None:
    """Before an optuna sweep starts: the study must maximize what `vitcli train` returns (its
    best val_top1), or every trial would be scored backwards. One line and exit 2 otherwise."""
    if OmegaConf.select(config, "hydra.sweeper._target_", default=None) != OPTUNA_SWEEPER:
        return
    direction = OmegaConf.select(config, "hydra.sweeper.direction", default=None)
    names = [str(d) for d in direction] if OmegaConf.is_list(direction) else [str(direction)]
    if names == [DIRECTION] or any(n not in ("minimize", "maximize") for n in names):
        return  # right, or a value the sweeper itself rejects with its own line
    err = UserError(f"hydra.sweeper.direction={'/'.join(names)}: `vitcli train` returns one value to "
                    f"{DIRECTION} (the best {METRIC}); use hydra.sweeper.direction={DIRECTION}")
    if full_errors():
        raise err
    print(f"vitcli: error: {err}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def sweep_study(sweep_dir: Path) -> Any | None:
    """The study a sweep dir's optuna_study.yaml names; None when there is none (or no optuna)."""
    try:
        from hydra_plugins.vitcli_optuna_sweeper.storage import RECORD, study_of_sweep
    except ImportError:
        return None
    if not (Path(sweep_dir) / RECORD).is_file():
        return None
    try:
        import optuna  # noqa: F401
    except ImportError:
        log.warning(f"{sweep_dir} holds an optuna study, but optuna is not installed ({install_hint('sweeps')})")
        return None
    return study_of_sweep(Path(sweep_dir))


def describe(study: Any) -> str:
    """`study 'NAME': 16 trials (10 complete, 6 pruned); best trial 3: 97.50`."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = [f"{sum(t.state == s for t in trials)} {s.name.lower()}" for s in TrialState
              if any(t.state == s for t in trials)]
    line = f"study '{study.study_name}': {len(trials)} trials ({', '.join(counts) or 'none yet'})"
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete and len(study.directions) == 1:
        best = study.best_trial
        line += f"; best trial {best.number}: {best.value:.2f}"
    return line


def draw(study: Any, sweep_dir: Path) -> list[Path]:
    """History, importances, slices and intermediate values as PNGs in <sweep dir>/plots/."""
    return write_study_plots(study, Path(sweep_dir) / "plots")


def log_to_wandb(cfg: Any, sweep_dir: Path, study: Any, images: list[Path]) -> None:
    """One job_type=sweep W&B run in the sweep's group (<experiment>/<stamp>, the jobs' group)
    holding the study plots and the best trial; never fails the sweep."""
    if "wandb" not in active_backends(cfg) or not images:  # logger=wandb, or a list holding it
        return
    try:
        import wandb

        from vitcli.engine.tracking import wandb_mode

        lc, sweep_dir = cfg.logger, Path(sweep_dir)
        group = lc.group or f"{cfg.name}/{sweep_dir.name}"
        with wandb.init(project=lc.project, entity=lc.entity, group=group, job_type="sweep",
                        name=f"{group}/study", dir=str(sweep_dir), mode=wandb_mode(lc.mode), reinit="finish_previous",
                        config={"sweep_dir": str(sweep_dir.resolve()), "study_name": study.study_name},
                        settings=wandb.Settings(init_timeout=lc.init_timeout, console="off")) as run:
            run.log({f"study/{p.stem}": wandb.Image(str(p)) for p in images})
            if len(study.directions) == 1 and any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
                best = study.best_trial
                run.summary.update({"best_trial": best.number, "best_value": best.value,
                                    **{f"best/{k}": v for k, v in best.params.items()}})
    except Exception as err:
        log.warning(f"wandb logging of the study plots failed: {type(err).__name__}: {err}")
