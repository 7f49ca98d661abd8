"""Samplers and pruners from hydra.sweeper.sampler / hydra.sweeper.pruner (a config or a name)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ._errors import SweeperConfigError
from .config import PRUNER_NAMES, SAMPLER_NAMES


class GridSampler(optuna.samplers.GridSampler):
    """optuna's GridSampler without its `study.stop()` after the last grid point, which only
    works inside `study.optimize`; the sweeper bounds n_trials by the grid size itself."""

    def after_trial(self, study: Any, trial: Any, state: Any, values: Sequence[float] | None) -> None:
        pass


def _target(node: Any, names: Mapping[str, str], what: str) -> dict[str, Any]:
    """A config node as a dict with `_target_`; a name (or null) maps to optuna's defaults."""
    if node is None:
        node = "none" if what == "pruner" else "tpe"
    if isinstance(node, str):
        if node not in names:
            raise SweeperConfigError(
                f"hydra.sweeper.{what}={node}: unknown {what}; choose one of {', '.join(names)}")
        return {"_target_": names[node]}
    cfg = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    if not isinstance(cfg, dict) or "_target_" not in cfg:
        raise SweeperConfigError(f"hydra.sweeper.{what} needs a _target_ (an optuna {what} class) or a name: "
                                 f"{', '.join(names)}")
    return cfg


def build_sampler(node: Any, grid: dict[str, list[Any]] | None) -> optuna.samplers.BaseSampler:
    """The sampler; a grid sampler gets `grid` (None: the space is not discrete)."""
    cfg = _target(node, SAMPLER_NAMES, "sampler")
    if cfg["_target_"] in ("optuna.samplers.GridSampler", GridSampler.__module__ + ".GridSampler"):
        if grid is None:
            raise SweeperConfigError("hydra/sweeper/sampler=grid needs discrete values: give every "
                                     "hydra.sweeper.params entry as choice(...) or range(...)")
        cfg = {**cfg, "_target_": GridSampler.__module__ + ".GridSampler", "search_space": grid}
    return _instantiate(cfg, "sampler", optuna.samplers.BaseSampler)


def build_pruner(node: Any) -> optuna.pruners.BasePruner:
    return _instantiate(_target(node, PRUNER_NAMES, "pruner"), "pruner", optuna.pruners.BasePruner)


def pruner_config(node: Any) -> dict[str, Any]:
    """The pruner as a plain dict (recorded for the jobs, which build the same pruner)."""
    return _target(node, PRUNER_NAMES, "pruner")


def is_nop(pruner: optuna.pruners.BasePruner) -> bool:
    return isinstance(pruner, optuna.pruners.NopPruner)


def _instantiate(cfg: dict[str, Any], what: str, base: type) -> Any:
    from hydra.errors import InstantiationException

    try:
        obj = instantiate(cfg, _convert_="all")
    except InstantiationException as err:
        cause = err.__cause__ or err
        message = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
        raise SweeperConfigError(f"hydra.sweeper.{what} ({cfg['_target_']}): {message}") from err
    if not isinstance(obj, base):
        raise SweeperConfigError(f"hydra.sweeper.{what}: {cfg['_target_']} is not an optuna {what}")
    return obj
