"""The job side: the optuna trial a Hydra job runs, reached through the study's storage.

The sweeper passes each job `hydra.sweeper.trial=<number>` and records the study in the
sweep dir, so a job in any process (basic, joblib, submitit/SLURM) can report to its trial:

    >>> trial = current_trial()          # None outside an optuna sweep
    >>> if trial is not None:
    ...     trial.report(val_top1, step=epoch)
    ...     if trial.should_prune():
    ...         trial.prune()            # the trial is PRUNED; stop at this epoch boundary

(the same calls as optuna's own integration callbacks). A job that starts child processes
(DDP) passes `link.env()` to them; `current_trial()` reads it there.
"""

# no `from __future__ import annotations`: Hydra's plugin scan runs this module before it is in
# sys.modules, where dataclasses cannot resolve string annotations
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .storage import StudyRecord

ENV_VAR = "VITCLI_OPTUNA_TRIAL"


@dataclass(frozen=True)
class TrialLink:
    """What a job needs to reach its trial: the study, its storage, the trial number, the pruner."""

    study_name: str
    storage: str
    number: int
    pruner: dict[str, Any]

    def env(self) -> dict[str, str]:
        return {ENV_VAR: json.dumps(asdict(self))}

    def open(self) -> "SweepTrial":
        return SweepTrial(self)


def current_link() -> TrialLink | None:
    """This job's trial: from the env (a child process), or from the Hydra job config."""
    if os.environ.get(ENV_VAR):
        return TrialLink(**json.loads(os.environ[ENV_VAR]))
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    number = hc.sweeper.get("trial") if "sweeper" in hc else None
    if number is None:
        return None
    record = StudyRecord.read(Path(hc.sweep.dir))
    if record is None:
        raise FileNotFoundError(f"trial {number}: {Path(hc.sweep.dir) / 'optuna_study.yaml'} is missing "
                                "(the sweeper writes it when the sweep starts)")
    return TrialLink(record.study_name, record.storage, int(number), dict(record.pruner))


def current_trial() -> "SweepTrial | None":
    link = current_link()
    return None if link is None else link.open()


class SweepTrial:
    """An optuna trial opened from another process: report, should_prune, prune."""

    def __init__(self, link: TrialLink) -> None:
        import optuna
        from hydra.utils import instantiate

        from .storage import open_storage

        self.link = link
        storage = open_storage(link.storage)
        pruner = instantiate(link.pruner, _convert_="all") if link.pruner else None
        # RandomSampler: the job samples nothing, and its after_trial (on prune) does nothing
        self.study = optuna.load_study(study_name=link.study_name, storage=storage,
                                       sampler=optuna.samplers.RandomSampler(), pruner=pruner)
        study_id = storage.get_study_id_from_name(link.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, link.number)
        self.trial = optuna.trial.Trial(self.study, trial_id)

    @property
    def number(self) -> int:
        return self.link.number

    @property
    def directions(self) -> list[str]:
        return [d.name.lower() for d in self.study.directions]

    @property
    def prunes(self) -> bool:
        """False for the NopPruner (and multi-objective studies, which optuna cannot prune)."""
        import optuna

        return len(self.study.directions) == 1 and not isinstance(self.study.pruner, optuna.pruners.NopPruner)

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.trial.params)

    def report(self, value: float, step: int) -> None:
        """The trial's intermediate value at `step` (a step reported before is kept, as in optuna)."""
        if len(self.study.directions) == 1:
            self.trial.report(float(value), step)

    def should_prune(self) -> bool:
        return self.prunes and self.trial.should_prune()

    def prune(self) -> None:
        """Mark the trial PRUNED now (its value: the last reported one); the sweeper keeps it."""
        import optuna

        self.study.tell(self.trial, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
