"""Where a run's wall time went: one clock per run that is always in exactly one phase.

The clock starts when the process (or the CLI call, or the sweep job) starts and is in `startup`
until the first training step; the loop then switches it between phases at points it passes
anyway (a batch taken from the loader, an evaluation, a save, a summary write). Elapsed time is
charged to the phase the clock was in, so the phases add up to the wall time by construction.
Nothing here synchronizes a device: on a GPU the step's kernels finish at the loop's own read-back
points (log steps, epoch ends), and that wait lands in `step`, where it belongs.

A phase entered with `phase(name)` is also counted (evaluations, saves), and the clock returns to
the phase it left when the block ends.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator

PHASES = ("startup", "data_wait", "step", "eval", "checkpoint", "plots_logging", "teardown")
STEP_PHASES = ("step",)  # the rest is the run around the step

_IMPORTED = time.perf_counter()  # the earliest mark a process has (vitcli.cli imports this first)
_pending: "PhaseClock | None" = None  # started by the CLI (or a sweep job), taken by the run
_first_call = True


class PhaseClock:
    """Wall seconds per phase since `start` (a time.perf_counter() value), and how often each was entered.

    Args:
        start: when the run's clock starts (default: now).
    """

    def __init__(self, start: float | None = None) -> None:
        self.start = time.perf_counter() if start is None else start
        self.started_at = time.time() - (time.perf_counter() - self.start)  # the same moment, as a Unix time
        self.current, self.since = "startup", self.start
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.counts = dict.fromkeys(PHASES, 0)

    def switch(self, name: str) -> str:
        """Charge the time since the last switch to the current phase, enter `name`; returns the phase left."""
        now = time.perf_counter()
        self.seconds[self.current] += now - self.since
        previous, self.current, self.since = self.current, name, now
        return previous

    @contextmanager
    def phase(self, name: str, count: bool = True) -> Iterator[None]:
        """`with clock.phase("eval"):` the block's time is `eval`, counted once (unless not `count`); then
        back to the phase before."""
        previous = self.switch(name)
        self.counts[name] += int(count)
        try:
            yield
        finally:
            self.switch(previous)

    def record(self) -> dict[str, Any]:
        """summary.json's `wall_s`, `phases` (seconds) and `phase_counts`, up to now (the clock keeps going)."""
        now = time.perf_counter()
        seconds = dict(self.seconds)
        seconds[self.current] += now - self.since
        return {"wall_s": round(now - self.start, 3), "phases": {k: round(v, 3) for k, v in seconds.items()},
                "phase_counts": {k: v for k, v in self.counts.items() if v}, "started_at": round(self.started_at, 3)}


def begin(start: float | None = None) -> None:
    """A command starts: its run's clock starts now (the first call in a process: at vitcli's import)."""
    global _pending, _first_call
    if start is None and _first_call:
        start = _IMPORTED
    _first_call = False
    _pending = PhaseClock(start)


def begin_unless_pending() -> None:
    """A sweep job starts: a clock of its own, unless the command's clock is still waiting for its first run."""
    if _pending is None:
        begin(time.perf_counter())


def take() -> PhaseClock:
    """The clock started for this run (a new one, started now, when nothing started one)."""
    global _pending
    clock, _pending = _pending, None
    return clock if clock is not None else PhaseClock()


def non_step_share(record: dict[str, Any]) -> float | None:
    """The share of the wall time spent outside the step (0..1), from a summary's `phases`; None without one."""
    phases, wall = record.get("phases"), record.get("wall_s")
    if not phases or not wall:
        return None
    return max(0.0, 1.0 - sum(phases.get(k, 0.0) for k in STEP_PHASES) / wall)


def table_rows(record: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(phase, seconds, share of wall, count) rows for the end-of-run table."""
    wall = record["wall_s"] or 1e-9
    counts = record.get("phase_counts", {})
    return [(name, f"{s:.1f}", f"{100 * s / wall:.1f}%", str(counts.get(name, "")))
            for name, s in record["phases"].items()]
