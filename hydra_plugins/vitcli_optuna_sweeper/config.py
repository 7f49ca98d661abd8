"""Hydra config nodes: hydra/sweeper=optuna, its sampler and pruner groups.

Samplers and pruners are optuna classes built with `hydra.utils.instantiate`, so any
optuna argument can be set (`hydra.sweeper.sampler.seed=0`), and `_target_` may name
another optuna sampler or pruner. The fields below mirror optuna 4's defaults.
"""

# no `from __future__ import annotations`: Hydra's plugin scan runs this module before it is in
# sys.modules, where dataclasses cannot resolve string annotations
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

SWEEPER_TARGET = "hydra_plugins.vitcli_optuna_sweeper.optuna_sweeper.OptunaSweeper"


@dataclass
class TPESamplerConf:
    """optuna.samplers.TPESampler (the default): Bayesian, good from ~10 trials on."""

    _target_: str = "optuna.samplers.TPESampler"
    seed: Optional[int] = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: Optional[bool] = None
    group: bool = False
    constant_liar: bool = True  # parallel workers do not all sample the same point


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: Optional[int] = None


@dataclass
class GridSamplerConf:
    """Every combination of choice()/range() values; the grid comes from hydra.sweeper.params."""

    _target_: str = "hydra_plugins.vitcli_optuna_sweeper._samplers.GridSampler"
    seed: Optional[int] = None


@dataclass
class CmaEsSamplerConf:
    """optuna.samplers.CmaEsSampler (needs the `cmaes` package): continuous parameters."""

    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: Optional[int] = None
    n_startup_trials: int = 1
    sigma0: Optional[float] = None
    restart_strategy: Optional[str] = None
    popsize: Optional[int] = None
    use_separable_cma: bool = False
    with_margin: bool = False
    lr_adapt: bool = False
    consider_pruned_trials: bool = False


@dataclass
class NSGAIISamplerConf:
    """optuna.samplers.NSGAIISampler: multi-objective (hydra.sweeper.direction=[maximize, minimize])."""

    _target_: str = "optuna.samplers.NSGAIISampler"
    seed: Optional[int] = None
    population_size: int = 50
    mutation_prob: Optional[float] = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5


@dataclass
class NopPrunerConf:
    """No pruning: every trial trains all its epochs."""

    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class MedianPrunerConf:
    """Stop a trial whose best value so far is worse than the median of the finished trials
    at the same step, once `n_startup_trials` trials have finished."""

    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class HyperbandPrunerConf:
    """Successive halving over several brackets; max_resource: the epochs of a full trial
    ("auto": the steps of the first finished trial)."""

    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"
    reduction_factor: int = 3
    bootstrap_count: int = 0


@dataclass
class OptunaSweeperConf:
    _target_: str = SWEEPER_TARGET
    _recursive_: bool = False  # the sweeper builds sampler and pruner itself (grid needs the space)
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}])

    # hydra/sweeper/sampler=tpe|random|grid|cmaes|nsgaii (or a name: hydra.sweeper.sampler=random)
    sampler: Any = MISSING
    # hydra/sweeper/pruner=none|median|hyperband, then hydra.sweeper.pruner.<setting>=...;
    # or a name with optuna's defaults: hydra.sweeper.pruner=median
    pruner: Any = MISSING
    # minimize | maximize, or a list of them for a multi-objective study
    direction: Any = "minimize"
    # sqlite:///path.db (any SQLAlchemy URL), or a journal file path (no "://"): shared by
    # processes and nodes (NFS). null: a journal file in the sweep dir, for this sweep only
    storage: Optional[str] = None
    # the same study_name + storage: a rerun resumes the study, several workers share it
    study_name: Optional[str] = None
    # trials in the whole study (finished, pruned, failed or running), not per run
    n_trials: int = 20
    # trials launched together (run side by side by a parallel launcher: joblib, submitit)
    n_jobs: int = 1
    # fraction of failed trials in a batch above which the sweep stops
    max_failure_rate: float = 0.0
    # the search space: key: interval(a, b) | tag(log, interval(a, b)) | range(a, b[, step]) | choice(...)
    params: Optional[Dict[str, str]] = None
    # dotpath of a callable (cfg, optuna.Trial) -> None that suggests more parameters
    custom_search_space: Optional[str] = None
    # study plots (history, importances, slices, intermediate values) in <sweep dir>/plots/
    plots: bool = True
    # set by the sweeper for each job (the job's optuna trial number); not a user setting
    trial: Optional[int] = None


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="vitcli_optuna_sweeper")
    samplers = {"tpe": TPESamplerConf, "random": RandomSamplerConf, "grid": GridSamplerConf,
                "cmaes": CmaEsSamplerConf, "nsgaii": NSGAIISamplerConf}
    for name, node in samplers.items():
        cs.store(group="hydra/sweeper/sampler", name=name, node=node, provider="vitcli_optuna_sweeper")
    pruners = {"none": NopPrunerConf, "median": MedianPrunerConf, "hyperband": HyperbandPrunerConf}
    for name, node in pruners.items():
        cs.store(group="hydra/sweeper/pruner", name=name, node=node, provider="vitcli_optuna_sweeper")


# name shorthands (hydra.sweeper.sampler=random, hydra.sweeper.pruner=median): optuna's defaults
SAMPLER_NAMES = {"tpe": "optuna.samplers.TPESampler", "random": "optuna.samplers.RandomSampler",
                 "grid": GridSamplerConf._target_, "cmaes": "optuna.samplers.CmaEsSampler",
                 "nsgaii": "optuna.samplers.NSGAIISampler"}
PRUNER_NAMES = {"none": "optuna.pruners.NopPruner", "median": "optuna.pruners.MedianPruner",
                "hyperband": "optuna.pruners.HyperbandPruner"}

register()
