"""Ending a run before its last epoch: an epoch-end stop hook, and stop signals.

After each epoch's record is written and its checkpoints saved, the trainer asks every
stopper whether the run should end here. A stopper returns None (go on) or a
`StopDecision`; the first decision ends the run with its status (for example
`completed` for early stopping, `pruned` for a search that gave up on a trial),
best weights exported and summary.json recording who stopped it, why, and at which epoch.

Under DDP only rank 0 asks the stoppers, and its decision is sent to every rank, so all
ranks stop after the same epoch.

A rerun of a run dir (resume) replays the epochs it already has through the stoppers
(`replay`): a run that early stopping ended stays ended, with the same decision. To train
on deliberately, resume with another patience: `vitcli train resume=RUN_DIR
trainer.early_stop_patience=0` (off) or a larger one.

A stop signal (launch/interrupts.py raises the flag) ends a run at once instead: `SignalStop`
has every rank agree to stop at the same step or evaluation batch, and saves, records and hands
the stopped run back to SLURM before any rank leaves.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from vitcli.core.errors import UserError
from vitcli.core.runtime import Runtime
from vitcli.engine.pruning import METRIC, open_trial, selection_value
from vitcli.launch import interrupts, requeue, slurm
from vitcli.launch.comm import broadcast_from_main, control_group, min_over_ranks

log = logging.getLogger("vitcli")


@dataclass
class StopDecision:
    """Why a run ends early.

    Args:
        status: the summary.json status the run ends with (e.g. completed, pruned).
        by: which stopper decided (e.g. early_stop).
        reason: one line for the log and summary.json.
    """

    status: str
    by: str
    reason: str

    def record(self, epoch: int) -> dict[str, Any]:
        """What summary.json keeps under `stopped`."""
        return {**asdict(self), "epoch": epoch}


class EpochStopper(Protocol):
    def after_epoch(self, epoch: int, record: dict[str, Any]) -> StopDecision | None:
        """`epoch`: epochs completed (1-based); `record`: that epoch's metrics.jsonl record."""


@dataclass
class EarlyStopping:
    """trainer.early_stop_patience=N: end the run after N evaluations (evaluated epochs: trainer.eval_interval)
    whose selection top-1 (the better of the raw and EMA weights, as best.pt is chosen) is not above the best so far."""

    patience: int
    best: float | None = None
    best_epoch: int = 0
    since_best: int = 0  # evaluations since the best one

    @staticmethod
    def score(record: dict[str, Any]) -> float:
        return max(float(record["val_top1"]), float(record.get("ema_top1", float("-inf"))))

    def resume(self, history: list[dict[str, Any]]) -> StopDecision | None:
        """Replay the epochs a resumed run already has, so patience counts as if it had never stopped;
        the decision it took on them (the run already ended), or None."""
        decisions = [self.after_epoch(int(record["epoch"]), record) for record in history
                     if record.get("val_top1") is not None]  # epochs that were not evaluated do not count
        return next((d for d in decisions if d is not None), None)

    def after_epoch(self, epoch: int, record: dict[str, Any]) -> StopDecision | None:
        score = self.score(record)
        if self.best is None or score > self.best:
            self.best, self.best_epoch, self.since_best = score, epoch, 0
            return None
        self.since_best += 1
        if self.since_best < self.patience:
            return None
        return StopDecision("completed", "early_stop", f"val top-1 has not improved on {self.best:.2f} (epoch "
                            f"{self.best_epoch}) for {self.since_best} evaluations (trainer.early_stop_patience="
                            f"{self.patience})")


def replay(stoppers: list[EpochStopper], history: list[dict[str, Any]]) -> StopDecision | None:
    """A resumed run's epochs (metrics.jsonl records up to its checkpoint) replayed through the stoppers
    that count epochs: the first decision they already took (the run stays stopped), or None."""
    decisions = [getattr(stopper, "resume", lambda history: None)(history) for stopper in stoppers]
    decision = next((d for d in decisions if d is not None), None)
    if decision is not None:
        log.info(f"this run was already stopped ({decision.by}): nothing to train; to train on, resume it with another "
                 "patience: vitcli train resume=RUN_DIR trainer.early_stop_patience=0 (off) or a larger one")
    return decision


def create_stoppers(cfg: Any) -> list[EpochStopper]:
    """The stoppers a run's config asks for: early stopping (trainer.early_stop_patience) and, when
    the run is a trial of vitcli's optuna sweeper, a TrialPruner (engine/pruning.py)."""
    stoppers: list[EpochStopper] = []
    patience = int(cfg.trainer.get("early_stop_patience", 0) or 0)
    if patience < 0:
        raise UserError(f"trainer.early_stop_patience={patience} must be >= 0 (0: off)")
    if patience:
        stoppers.append(EarlyStopping(patience))
    trial = open_trial()
    if trial is not None:
        stoppers.append(TrialPruner(trial))
    return stoppers


class TrialPruner:
    """Reports the selection metric to an optuna trial after every evaluation, at the epoch's number
    (so pruners' warm-up, intervals and Hyperband's resources are epochs whatever trainer.eval_interval
    is, and a resumed trial reports where it left off); stops the run when the study's pruner prunes
    the trial (which is then PRUNED in the study)."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial

    def after_epoch(self, epoch: int, record: dict[str, Any]) -> StopDecision | None:
        value = selection_value(record)
        self.trial.report(value, epoch)
        if not self.trial.should_prune():
            return None
        self.trial.prune()
        pruner = type(self.trial.study.pruner).__name__
        return StopDecision("pruned", "optuna", f"trial {self.trial.number}: {METRIC} {value:.2f} after epoch "
                                                f"{epoch} is not promising ({pruner})")


class SignalStop:
    """The loop's stop vote, and what follows a stop.

    Args:
        runtime: this rank (the vote runs on the gloo control group under DDP).
        val_batches: this rank's evaluation batches; ranks vote on those they all have (their
            shards of the split may differ by one batch).
    """

    def __init__(self, runtime: Runtime, val_batches: int):
        self.runtime = runtime
        self.vote = interrupts.StopVote(control_group())
        self.eval_batches = min_over_ranks(val_batches) if runtime.distributed else val_batches

    def in_evaluation(self, state: Any, batches_per_epoch: int) -> Callable[[int], None]:
        """evaluate()'s `stop`: before each batch of the epoch-end evaluation, a stop signal ends
        it at once (an evaluation, twice with EMA, could outlast SLURM's signal delay). The run
        goes back to the end of the epoch's training, so a resumed run evaluates that epoch again
        and ends exactly as an uninterrupted one."""

        def check(batch: int) -> None:
            if batch < self.eval_batches and self.vote.poll():
                state.epoch, state.batch_in_epoch = state.epoch - 1, batches_per_epoch
                raise interrupts.TrainingInterrupted(self.vote.signum, f"while evaluating epoch {state.epoch + 1}")

        return check

    def save(self, err: interrupts.TrainingInterrupted, state: Any, window: Any, run_dir: Path) -> None:
        """Save last.pt and summary.json, hand the job back to SLURM when it must run again, and
        only then let the ranks go: JobRequeued on every rank when SLURM runs the job again, else
        `err` carries the plan on rank 0 (which reports the stop).

        Rank 0 requeues before any rank leaves: a rank that exits first may get SLURM (`srun -K`,
        KillOnBadExit) to kill rank 0 before it asked. It saves first and requeues after: the
        save has to fit in the signal's delay, and a requeue starts SLURM's KillWait."""
        window.read(state.epoch, state.global_step)  # the loss totals last.pt records (and a finite state)
        state.save_last()  # the state after the last whole step: a rerun resumes from it exactly
        state.join_checkpoints()  # written (background writer) before SLURM is asked or any rank leaves
        plan = None
        if self.runtime.is_main:  # under SLURM: is the job requeued (by SLURM, or by rank 0 next)?
            plan = requeue.plan_stop(err.signum)
            state.summary_fields.update(slurm.summary_fields(plan.requeues))
            state.finish(plan.status)
            plan = requeue.hand_back(plan, run_dir)
        agreed = broadcast_from_main(plan) if self.runtime.distributed else plan  # waits for rank 0
        requeue.leave_if_requeued(agreed, run_dir)
        err.plan = plan
