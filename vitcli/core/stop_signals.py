"""The signals that ask a vitcli process to stop, and DataLoader workers that leave them to it.

SLURM signals every process of a job step (preemption, `scontrol requeue`, `scancel`, a time
limit and its `--signal` warning), a shell's Ctrl-C reaches its whole process group, and torch's
DataLoader workers die of SIGTERM sent by anyone but their parent (its C handler re-raises it) and
of SIGUSR2's default action. A dead worker fails the main process at its next batch, before it
can save. `WorkerInit` makes workers leave these signals to the main process, which finishes its
step, saves checkpoints/last.pt and stops (launch/interrupts.py); the workers then end the way
they always do: when the main process shuts them down, SIGTERMs them, or is gone.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Callable

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


class WorkerInit:
    """A DataLoader `worker_init_fn` that leaves the stop signals to the main process, then runs
    `inner` (the loader's own worker_init_fn, if any). Picklable, for spawned workers too.

    SIGINT and SIGUSR2 are ignored. SIGTERM still ends the worker when the process that built
    the loader sends it (torch's own shutdown: `w.terminate()`, multiprocessing's exit handler),
    and is ignored from anyone else (SLURM, a shell's `kill -- -PGID`).

    Args:
        inner: an existing worker_init_fn, called after, with the worker id.
    """

    def __init__(self, inner: Callable[[int], None] | None = None):
        self.inner = inner
        self.owner = os.getpid()  # the main process: built in it, pickled into each worker

    def __call__(self, worker_id: int) -> None:
        leave_stop_signals_to(self.owner)
        if self.inner is not None:
            self.inner(worker_id)


def leave_stop_signals_to(owner: int) -> None:
    """In a worker process: ignore SIGINT and SIGUSR2; SIGTERM ends it only when `owner` sent it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    if not hasattr(signal, "sigwaitinfo"):  # macOS: no sender to tell apart; torch's handler stays
        return
    # blocked (not ignored: an ignored signal is discarded, and the sender is lost), and taken by a
    # thread that sees who sent it; threads started later inherit the mask
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    threading.Thread(target=_end_on_owners_sigterm, args=(owner,), name="vitcli-sigterm", daemon=True).start()


def _end_on_owners_sigterm(owner: int) -> None:
    while True:
        info = signal.sigwaitinfo({signal.SIGTERM})
        if info.si_pid == owner:
            os._exit(0)  # what torch's worker does on its parent's SIGTERM
