"""What the training loop does with a stop signal (launch/interrupts.py raises the flag): every
rank agrees to stop at the same step or evaluation batch, and the stopped run is saved, recorded
and handed back to SLURM before any rank leaves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from vitcli.core.runtime import Runtime
from vitcli.launch import interrupts, requeue, slurm
from vitcli.launch.comm import broadcast_from_main, control_group, min_over_ranks


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
        plan = None
        if self.runtime.is_main:  # under SLURM: is the job requeued (by SLURM, or by rank 0 next)?
            plan = requeue.plan_stop(err.signum)
            state.summary_fields.update(slurm.summary_fields(plan.requeues))
            state.finish(plan.status)
            plan = requeue.hand_back(plan, run_dir)
        agreed = broadcast_from_main(plan) if self.runtime.distributed else plan  # waits for rank 0
        requeue.leave_if_requeued(agreed, run_dir)
        err.plan = plan
