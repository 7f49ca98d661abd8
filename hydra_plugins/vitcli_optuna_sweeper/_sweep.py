"""The sweep: open (or resume) the study, then ask -> launch -> tell in batches of n_jobs
until the study holds n_trials trials; then the results file and the study plots.

A job's outcome becomes its trial's state: a float (a list for several directions) is
COMPLETE; a trial the job already finished in the storage (PRUNED by the job's pruning
hook) keeps that state; a job that raised optuna.TrialPruned is PRUNED; anything else
(an exception, None, NaN) is FAIL.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import optuna
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from ._errors import SweeperConfigError
from ._samplers import build_pruner, build_sampler, is_nop, pruner_config
from ._search_space import SearchSpace, parse_search_space
from .config import OptunaSweeperConf
from .plots import write_study_plots
from .storage import StudyRecord, open_storage, resolve_storage

log = logging.getLogger(__name__)

RESULTS = "optimization_results.yaml"
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


def parse_directions(direction: Any) -> list[str]:
    raw = list(direction) if isinstance(direction, (list, tuple)) or OmegaConf.is_list(direction) else [direction]
    names = [str(getattr(d, "name", d)).lower() for d in raw]
    bad = [n for n in names if n not in ("minimize", "maximize")]
    if not names or bad:
        raise SweeperConfigError(f"hydra.sweeper.direction={direction}: use minimize or maximize "
                                 "(a list of them for several objectives)")
    return names


def check_numbers(s: OptunaSweeperConf) -> None:
    if s.n_trials < 1 or s.n_jobs < 1:
        raise SweeperConfigError(f"hydra.sweeper.n_trials={s.n_trials}, n_jobs={s.n_jobs}: both must be >= 1")
    if not 0.0 <= s.max_failure_rate <= 1.0:
        raise SweeperConfigError(f"hydra.sweeper.max_failure_rate={s.max_failure_rate}: give a fraction in [0, 1]")


class StudySweep:
    def __init__(self, settings: OptunaSweeperConf, config: DictConfig, launcher: Any) -> None:
        self.s = settings
        self.config = config
        self.launcher = launcher
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    def run(self, arguments: list[str]) -> list[JobReturn]:
        check_numbers(self.s)
        directions = parse_directions(self.s.direction)
        space = parse_search_space(self.s.params, arguments)
        if not space.params and not self.s.custom_search_space:
            raise SweeperConfigError("nothing to search: give hydra.sweeper.params (e.g. "
                                     "optimizer.lr: tag(log, interval(1e-5, 1e-2))) or sweeps on the command line")
        study, record = self._open_study(directions, space)
        target = self._target_trials(space, study.sampler)
        done = len(study.get_trials(deepcopy=False, states=COUNTED))
        log.info(f"optuna study '{record.study_name}' in {record.storage}: {done} trials so far, "
                 f"n_trials={target}; sampler {type(study.sampler).__name__}, pruner {type(study.pruner).__name__}, "
                 f"{'/'.join(directions)}")
        if done >= target:
            log.info(f"the study already has {done} of n_trials={target} trials: nothing to run "
                     "(raise hydra.sweeper.n_trials to add trials)")
        returns = self._optimize(study, space, target)
        self._finish(study, record)
        return returns

    # ---- the study ----
    def _open_study(self, directions: list[str], space: SearchSpace) -> tuple[optuna.Study, StudyRecord]:
        sampler = build_sampler(self.s.sampler, space.grid())
        pruner = build_pruner(self.s.pruner)
        if not is_nop(pruner) and len(directions) > 1:
            raise SweeperConfigError("optuna cannot prune a multi-objective study: use hydra/sweeper/pruner=none "
                                     f"with hydra.sweeper.direction={directions}")
        storage = resolve_storage(self.s.storage, self.sweep_dir)
        study = optuna.create_study(study_name=self.s.study_name, storage=open_storage(storage), sampler=sampler,
                                    pruner=pruner, directions=directions, load_if_exists=True)
        have = [d.name.lower() for d in study.directions]
        if have != directions:
            raise SweeperConfigError(
                f"hydra.sweeper.direction={'/'.join(directions)}, but study '{study.study_name}' in {storage} "
                f"is {'/'.join(have)}: use that direction or another hydra.sweeper.study_name")
        record = StudyRecord(study.study_name, storage, directions, pruner_config(self.s.pruner))
        record.write(self.sweep_dir)
        return study, record

    def _target_trials(self, space: SearchSpace, sampler: optuna.samplers.BaseSampler) -> int:
        """n_trials, capped at the grid's size for a grid sampler (given by group, by name or by _target_):
        trials past it would rerun grid points."""
        grid = space.grid()
        if isinstance(sampler, optuna.samplers.GridSampler) and grid is not None:
            size = 1
            for values in grid.values():
                size *= len(values)
            if size < self.s.n_trials:
                log.info(f"grid sampler: {size} grid points, so n_trials={size}")
            return min(self.s.n_trials, size)
        return self.s.n_trials

    # ---- ask -> launch -> tell ----
    def _optimize(self, study: optuna.Study, space: SearchSpace, target: int) -> list[JobReturn]:
        extend = None
        if self.s.custom_search_space:
            from hydra.utils import instantiate

            extend = instantiate({"_target_": self.s.custom_search_space, "_partial_": True})
        returns: list[JobReturn] = []
        first_batch = True
        while True:
            counted = len(study.get_trials(deepcopy=False, states=COUNTED))
            batch_size = min(self.s.n_jobs, target - counted)
            if batch_size <= 0:
                break
            trials: list[optuna.Trial] = []
            try:
                for _ in range(batch_size):
                    trial = study.ask(fixed_distributions=space.distributions)
                    trials.append(trial)
                    if extend is not None:
                        extend(self.config, trial)
                overrides = [self._job_overrides(t, space) for t in trials]
                if first_batch:  # a misspelt key fails here, once, not in every job
                    self.validate_batch_is_legal(overrides)
                    first_batch = False
                batch = self._launch(trials, overrides)
            except BaseException:
                _fail_untold(study, trials)  # Ctrl-C, a launcher error: no trial is left RUNNING
                raise
            returns.extend(batch)
            self._tell_batch(study, trials, batch)
        return returns

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        loader = self.launcher.hydra_context.config_loader if getattr(self.launcher, "hydra_context", None) else None
        if loader is None:
            return
        for overrides in batch:
            loader.load_sweep_config(master_config=self.config, sweep_overrides=list(overrides))

    def _job_overrides(self, trial: optuna.Trial, space: SearchSpace) -> list[str]:
        return [*space.overrides(trial.params), f"hydra.sweeper.trial={trial.number}"]

    def _launch(self, trials: list[optuna.Trial], overrides: list[list[str]]) -> list[JobReturn]:
        """Job numbers are trial numbers (job dir <sweep dir>/<trial>): launched together when
        consecutive, as they are unless another worker asked in between."""
        returns: list[JobReturn] = []
        start = 0
        for i in range(1, len(trials) + 1):
            if i == len(trials) or trials[i].number != trials[i - 1].number + 1:
                returns.extend(self.launcher.launch(overrides[start:i], initial_job_idx=trials[start].number))
                start = i
        return returns

    def _tell_batch(self, study: optuna.Study, trials: list[optuna.Trial], batch: list[JobReturn]) -> None:
        stored = {t.number: t for t in study.get_trials(deepcopy=False)}
        failures = 0
        for trial, ret in zip(trials, batch):
            frozen = stored[trial.number]
            if frozen.state.is_finished():  # the job told it (PRUNED by its pruning hook)
                state, note = frozen.state, _describe(frozen)
            else:
                state, note = _tell(study, trial, ret)
            failures += state == TrialState.FAIL
            log.info(f"trial {trial.number} {state.name}{note}  {' '.join(self._shown(trial.params))}")
        if batch and failures / len(batch) > self.s.max_failure_rate:
            log.error(f"{failures} of {len(batch)} trials failed (max_failure_rate={self.s.max_failure_rate})")
            for ret in batch:
                _ = ret.return_value  # re-raises the first failed job's exception, with its traceback
            raise RuntimeError(f"{failures} of {len(batch)} trials failed (hydra.sweeper.max_failure_rate="
                               f"{self.s.max_failure_rate})")

    @staticmethod
    def _shown(params: dict[str, Any]) -> list[str]:
        return [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()]

    # ---- the end ----
    def _finish(self, study: optuna.Study, record: StudyRecord) -> None:
        trials = study.get_trials(deepcopy=False)
        counts = {s.name: sum(t.state == s for t in trials) for s in TrialState if any(t.state == s for t in trials)}
        results: dict[str, Any] = {"name": "optuna", "study_name": record.study_name, "storage": record.storage,
                                   "directions": record.directions, "trials": counts}
        completed = [t for t in trials if t.state == TrialState.COMPLETE]
        if len(record.directions) == 1 and completed:
            best = study.best_trial
            results.update(best_trial=best.number, best_value=best.value, best_params=best.params)
            log.info(f"best trial {best.number}: value {best.value:.4g}  {' '.join(self._shown(best.params))}")
        elif completed:
            results["solutions"] = [{"trial": t.number, "values": t.values, "params": t.params}
                                    for t in study.best_trials]
            log.info(f"{len(study.best_trials)} Pareto-optimal trials")
        log.info("trials: " + ", ".join(f"{n} {name.lower()}" for name, n in counts.items()))
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / RESULTS)
        if self.s.plots:
            written = write_study_plots(study, self.sweep_dir / "plots")
            if written:
                log.info(f"study plots: {', '.join(p.name for p in written)} in {self.sweep_dir / 'plots'}")


def _tell(study: optuna.Study, trial: optuna.Trial, ret: JobReturn) -> tuple[TrialState, str]:
    if ret.status == JobStatus.FAILED:
        err = ret._return_value
        if isinstance(err, optuna.TrialPruned):
            frozen = study.tell(trial, state=TrialState.PRUNED)
            return TrialState.PRUNED, _describe(frozen)
        study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL, f" ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    value = ret.return_value
    n = len(study.directions)
    try:
        values = [float(v) for v in value] if n > 1 else [float(value)]
    except (TypeError, ValueError):
        study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL, f" (the job returned {value!r}, not {'a float' if n == 1 else f'{n} floats'})"
    if len(values) != n:
        study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL, f" (the job returned {len(values)} values for {n} directions)"
    frozen = study.tell(trial, values)  # NaN: optuna makes it FAIL
    return frozen.state, _describe(frozen)


def _describe(frozen: FrozenTrial) -> str:
    parts = []
    if frozen.values is not None:
        parts.append("value " + ", ".join(f"{v:.4g}" for v in frozen.values))
    if frozen.state == TrialState.PRUNED and frozen.last_step is not None:
        parts.append(f"at step {frozen.last_step}")
    return f" ({'; '.join(parts)})" if parts else ""


def _fail_untold(study: optuna.Study, trials: list[optuna.Trial]) -> None:
    for trial in trials:
        try:
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        except Exception:  # the storage itself may be what failed
            pass
