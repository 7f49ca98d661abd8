"""SIGINT / SIGTERM during training: finish the current batch, then stop cleanly.

`stop_requests()` installs handlers that only set a flag; the training loop polls
`requested()` after each optimizer step and raises `TrainingInterrupted`, so the
checkpoint it then saves is the state after a whole step (exactly what resume expects).
A second signal falls through to the default behaviour (Ctrl-C twice ends at once).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

_received: list[int] = []


class TrainingInterrupted(Exception):
    """Raised by the loop after a stop was requested; carries the signal number."""

    def __init__(self, signum: int, where: str = ""):
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}{' ' + where if where else ''}")


def requested() -> int | None:
    """The signal that asked training to stop, if any."""
    return _received[0] if _received else None


def _handler(signum, frame) -> None:
    if _received:  # second signal: stop now
        signal.signal(signum, signal.SIG_DFL)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.raise_signal(signum)
    _received.append(signum)


@contextmanager
def stop_requests(enabled: bool = True) -> Iterator[None]:
    """Within the block, SIGINT/SIGTERM set a flag instead of ending the process.
    Only in the main thread of a single process (DDP ranks keep the defaults: ranks
    stopping at different steps would hang each other's collectives)."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    previous = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
