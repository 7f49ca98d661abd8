"""SIGINT / SIGTERM / SIGUSR2 during training: finish the current step, then stop cleanly.

`stop_requests()` installs handlers that only set a flag; the training loop asks a `StopVote`
after each optimizer step and raises `TrainingInterrupted`, so the checkpoint it then saves is
the state after a whole step (exactly what resume expects). SIGUSR2 is SLURM's warning before a
time limit (`sbatch --signal=USR2@<s>`, submitit's default); SIGTERM is preemption, `scontrol
requeue`, `scancel` or the limit itself (launch/slurm.py decides what follows).

Under DDP a signal may reach one rank only, or the ranks at different steps; the vote reduces
the flags over ranks (MAX) so that every rank stops at the same step and rank 0 saves once.

Ctrl-C twice ends at once. A repeated SIGTERM or SIGUSR2 does not: SLURM signals every process
of a job step, sometimes twice, and sends SIGKILL itself once its KillWait is over.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)  # DataLoader workers leave them to us (data/files.py)

_received: list[int] = []
_before: dict[int, Any] = {}  # signal -> the handler it had before vitcli took it
_depth = 0  # stop_requests blocks open
_leaving = False  # the job went back to SLURM: this process only exits now (leave_quietly)


class TrainingInterrupted(Exception):
    """Raised by the loop after a stop was requested; carries the signal number, and what
    happens to the job next (launch/slurm.py's StopPlan, set where the run was saved)."""

    def __init__(self, signum: int, where: str = ""):
        self.signum = signum
        self.exit_code = 128 + signum
        self.plan: Any = None
        super().__init__(f"interrupted by {signal.Signals(signum).name}{' ' + where if where else ''}")


def requested() -> int | None:
    """The signal that asked this process to stop, if any."""
    return _received[0] if _received else None


def _handler(signum, frame) -> None:
    if _received:
        if signum != signal.SIGINT:
            return  # SLURM repeats SIGTERM / USR2 and escalates to SIGKILL on its own
        signal.signal(signum, signal.SIG_DFL)  # Ctrl-C twice: stop now
        raise KeyboardInterrupt
    _received.append(signum)


def take(signals: tuple[int, ...]) -> list[int]:
    """From now on `signals` only raise the stop flag, which stays up until training acts on it
    (`vitcli train` under SLURM holds SIGUSR2 from its first line: SLURM's time-limit warning can
    come while Python is still importing). Returns the signals taken over by this call."""
    taken = []
    for s in signals:
        current = signal.getsignal(s)
        if current is not _handler:
            _before[s] = current
            signal.signal(s, _handler)
            taken.append(s)
    return taken


def handler_before(signum: int) -> Any:
    """The handler `signum` had before vitcli took it (submitit's own, in a job it started)."""
    return _before.get(signum, signal.getsignal(signum))


@contextmanager
def stop_requests(signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Within the block, `signals` set a flag instead of ending the process (main thread only:
    Python delivers signals there). Blocks nest; a flag raised before or inside the block stays
    up until the outermost block ends, and each block gives back the signals it took."""
    global _depth, _leaving
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _depth == 0:
        _leaving = False
    taken = take(signals)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        for s in taken:
            before = _before.pop(s)
            signal.signal(s, signal.SIG_IGN if _leaving else before)
        if _depth == 0:
            _received.clear()


def leave_quietly() -> None:
    """The job went back to SLURM and this process only exits now: from here on the stop signals
    are ignored (SLURM and srun repeat SIGTERM to a requeued job's processes; a second one during
    the teardown would end a rank with an error). SLURM's SIGKILL after KillWait still ends it."""
    global _leaving
    _leaving = True
    if threading.current_thread() is threading.main_thread():
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)


def leaving() -> bool:
    """leave_quietly() was called: a handler being put back should stay SIG_IGN."""
    return _leaving


class StopVote:
    """Whether to stop at this step, agreed by every rank.

    Alone, `poll()` is just the local flag. Under DDP every step boundary starts a MAX
    all-reduce of this rank's flag (a few bytes on a gloo group: no device sync, no wait) and
    reads the one started at the previous boundary, so all ranks see the same answer at the
    same step, one step after the first rank was signalled. `settle()` agrees at once (epoch end).

    Args:
        group: the torch.distributed process group to vote on (gloo); None for one process.
        local: this rank's own flag (the signal number or None).

    >>> vote = StopVote()
    >>> vote.poll() is None
    True
    """

    def __init__(self, group: Any = None, local: Callable[[], int | None] = requested):
        self.group, self.local = group, local
        self.signum: int | None = None
        self._pending: tuple[Any, Any] | None = None

    def _start(self) -> tuple[Any, Any]:
        import torch  # only under DDP; `vitcli train` takes SIGUSR2 through this module before torch loads
        import torch.distributed as torch_dist

        flag = torch.tensor([self.local() or 0], dtype=torch.int64)
        opts = torch_dist.AllreduceOptions()
        opts.reduceOp = torch_dist.ReduceOp.MAX
        return self.group.allreduce([flag], opts), flag

    def _finish(self) -> int | None:
        if self._pending is None:
            return None
        work, flag = self._pending
        self._pending = None
        work.wait()
        return int(flag.item()) or None

    def poll(self) -> int | None:
        """At a step boundary: the signal every rank stops for, or None to go on."""
        if self.signum is None:
            if self.group is None:
                self.signum = self.local()
            else:
                self.signum = self._finish()
                if self.signum is None:
                    self._pending = self._start()
        return self.signum

    def settle(self) -> int | None:
        """The agreed answer now, blocking (at an epoch end, where no step follows)."""
        if self.signum is None:
            if self.group is None:
                self.signum = self.local()
            else:
                self.signum = self._finish()
                if self.signum is None:
                    self._pending = self._start()
                    self.signum = self._finish()
        return self.signum
