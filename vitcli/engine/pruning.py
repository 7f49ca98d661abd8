"""The optuna trial a sweep job runs, for pruning (the stopper itself: engine/stopping.py).

The trial is reached through the study's storage (hydra_plugins/vitcli_optuna_sweeper/trial.py),
so this works wherever the job runs: in the sweeper's process, a joblib worker or a SLURM
job. Each epoch the run reports its selection metric to the trial; when the study's pruner
says so, the trial is marked PRUNED (with its last reported value, as optuna's integration
callbacks do) and the run ends at that epoch boundary with status `pruned`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator

from vitcli.core.errors import UserError, install_hint

log = logging.getLogger("vitcli")

METRIC = "val_top1"  # what `vitcli train` returns to the sweeper (its best epoch's value)
DIRECTION = "maximize"


def selection_value(record: dict[str, Any]) -> float:
    """The epoch's value of the selection metric: val top-1 of the better of the model and its EMA
    (the weights best.pt keeps), so the last report never exceeds what the trial returns."""
    return max(float(record["val_top1"]), float(record.get("ema_top1", float("-inf"))))


def open_trial() -> Any | None:
    """The job's optuna trial (a SweepTrial: report, should_prune, prune) when it runs a trial
    of vitcli's optuna sweeper, else None."""
    try:
        from hydra_plugins.vitcli_optuna_sweeper.trial import current_link
    except ImportError:  # the sweeper's package is not importable: no sweep of ours
        return None
    try:
        link = current_link()
        if link is None:
            return None
        trial = link.open()
    except ImportError as err:  # optuna missing in a job of an optuna sweep
        raise UserError(f"this job belongs to an optuna sweep but cannot import optuna ({err}): "
                        f"{install_hint('sweeps')}") from err
    except (KeyError, OSError, ValueError) as err:  # the study or trial is gone, the storage unreadable
        raise UserError(f"cannot reach this job's optuna trial ({type(err).__name__}: {err})") from err
    if trial.directions != [DIRECTION]:
        raise UserError(f"study '{link.study_name}' is {'/'.join(trial.directions)}, but `vitcli train` returns "
                        f"one value to maximize (best {METRIC}): use hydra.sweeper.direction={DIRECTION}")
    return trial


@contextlib.contextmanager
def trial_env() -> Iterator[None]:
    """While a sweep job runs, its trial link is in the environment too, so the processes it
    starts (torchrun ranks for trainer.devices > 1) report to the same trial."""
    try:
        from hydra_plugins.vitcli_optuna_sweeper.trial import current_link
    except ImportError:
        yield
        return
    link = current_link()
    saved = {k: os.environ.get(k) for k in (link.env() if link else {})}
    if link is not None:
        os.environ.update(link.env())
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
