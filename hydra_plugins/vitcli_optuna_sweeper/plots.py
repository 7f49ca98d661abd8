"""Study plots as PNGs (optuna.visualization.matplotlib): history, importances, slices,
intermediate values (the learning curves pruning acts on); a Pareto front when multi-objective.

    >>> paths = write_study_plots(study, sweep_dir / "plots")   # [] when nothing finished yet
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

PLOTS = ("optimization_history", "param_importances", "slice", "intermediate_values", "pareto_front")


def write_study_plots(study: Any, out_dir: Path) -> list[Path]:
    """Draw every plot the study has data for into out_dir/<name>.png; a plot that cannot be
    drawn (too few finished trials, one parameter only) is skipped with one log line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    finished = [t for t in study.get_trials(deepcopy=False)
                if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    complete = [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        log.info("study plots: no finished trial yet")
        return []
    multi = len(study.directions) > 1
    drawers: dict[str, Callable[[], Any]] = {}
    if multi:
        names = [f"objective {i}" for i in range(len(study.directions))]
        drawers["pareto_front"] = lambda: ovm.plot_pareto_front(study, target_names=names)
        drawers["param_importances"] = lambda: ovm.plot_param_importances(study, evaluator=_evaluator())
    else:
        drawers["optimization_history"] = lambda: ovm.plot_optimization_history(study)
        if len(complete) >= 2 and study.best_trial.params:
            drawers["param_importances"] = lambda: ovm.plot_param_importances(study, evaluator=_evaluator())
        if complete[0].params:
            drawers["slice"] = lambda: ovm.plot_slice(study)
        if any(t.intermediate_values for t in finished):
            drawers["intermediate_values"] = lambda: ovm.plot_intermediate_values(study)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    quiet = logging.getLogger("matplotlib.category")  # "Using categorical units..." for numeric choices
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    for name, draw in drawers.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning, tight-layout notes
                ax = draw()
                figure = _figure_of(ax)
                figure.savefig(out_dir / f"{name}.png", dpi=110, bbox_inches="tight")
                plt.close(figure)
            written.append(out_dir / f"{name}.png")
        except Exception as err:  # a picture must never fail a finished sweep
            log.warning(f"study plot {name} skipped: {type(err).__name__}: {err}")
            plt.close("all")
    quiet.setLevel(level)
    return written


def _evaluator() -> Any:
    """optuna's default (fANOVA), seeded: the same study draws the same picture."""
    from optuna.importance import FanovaImportanceEvaluator

    return FanovaImportanceEvaluator(seed=0)


def _figure_of(ax: Any) -> Any:
    """optuna returns an Axes, or an array of Axes (slice plots with several params)."""
    import numpy as np

    first = np.asarray(ax, dtype=object).ravel()[0] if not hasattr(ax, "figure") else ax
    return first.figure
