"""The Hydra Sweeper plugin class (hydra/sweeper=optuna); the work is in _sweep.py.

Kept free of optuna imports: Hydra imports this module whenever it scans for plugins.
"""

from __future__ import annotations

from typing import Any, List, Optional

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from ._errors import one_line_errors


class OptunaSweeper(Sweeper):
    """Ask optuna for trials, launch them as Hydra jobs, tell optuna their results."""

    def __init__(self, sampler: Any, pruner: Any, direction: Any, storage: Optional[str],
                 study_name: Optional[str], n_trials: int, n_jobs: int, max_failure_rate: float,
                 params: Optional[DictConfig], custom_search_space: Optional[str], plots: bool,
                 trial: Optional[int] = None) -> None:
        from .config import OptunaSweeperConf

        self.settings = OptunaSweeperConf(
            sampler=sampler, pruner=pruner, direction=direction, storage=storage, study_name=study_name,
            n_trials=n_trials, n_jobs=n_jobs, max_failure_rate=max_failure_rate, params=params,
            custom_search_space=custom_search_space, plots=plots)
        self.config: Optional[DictConfig] = None
        self.launcher: Any = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)

    @one_line_errors
    def sweep(self, arguments: List[str]) -> Any:
        try:
            import optuna  # noqa: F401
        except ImportError as err:
            from ._errors import SweeperConfigError

            # the sweeper imports nothing from vitcli: the hint is written as core/errors.py install_hint writes it
            raise SweeperConfigError(f"hydra/sweeper=optuna needs optuna >= 4 ({err}): "
                                     "pip install -e '.[sweeps]' (in the vitcli clone)") from err
        from ._sweep import StudySweep

        assert self.config is not None and self.launcher is not None
        return StudySweep(self.settings, self.config, self.launcher).run(list(arguments))
