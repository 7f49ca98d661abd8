"""`vitcli plan plan.find_batch=true`: the largest per-device batch that fits, by building the run at
each batch tried (build_parts, as `vitcli train` would) and measuring one warm optimizer step.

"Fits" means: on CUDA, no out-of-memory error (and a peak under plan.memory_budget_gb when set); on
the CPU, a peak RSS under plan.memory_budget_gb (default: the RAM available). On the CPU a batch whose
peak, extrapolated linearly from the batches measured so far, would exceed the RAM actually available
is not tried (the kernel would kill the process): it counts as not fitting, marked `predicted`.
"""

from __future__ import annotations

import copy
import gc
import logging
from typing import Any, Callable

import torch

from vitcli.core.errors import UserError
from vitcli.engine.optim import global_batch_size, scaled_lr
from vitcli.tasks.plan_memory import GB, MemoryProbe

log = logging.getLogger("vitcli")


def search_batch(fits: Callable[[int], bool], start: int, cap: int) -> tuple[int | None, list[int]]:
    """The largest batch in [1, cap] for which `fits` holds (taken as monotone), and the batches tried:
    doubling from `start` (halving when `start` does not fit), then bisection.

    >>> search_batch(lambda b: b <= 37, 8, 1000)
    (37, [8, 16, 32, 64, 48, 40, 36, 38, 37])
    >>> search_batch(lambda b: b <= 5, 64, 1000)
    (5, [64, 32, 16, 8, 4, 6, 5])
    >>> search_batch(lambda b: True, 8, 20)
    (20, [8, 16, 20])
    """
    tried: list[int] = []

    def check(b: int) -> bool:
        tried.append(b)
        return fits(b)

    lo, hi = None, None
    b = min(max(start, 1), cap)
    while lo is None or hi is None:  # doubling (or halving) until a fitting and a failing batch bracket it
        if check(b):
            lo = b
            if b == cap or hi is not None:
                break
            b = min(2 * b, cap)
        else:
            hi = b
            if b == 1 or lo is not None:
                break
            b = b // 2
    if lo is None:
        return None, tried
    while hi is not None and hi - lo > 1:
        mid = (lo + hi) // 2
        if check(mid):
            lo = mid
        else:
            hi = mid
    return lo, tried


def extrapolated_peak(trials: list[dict[str, Any]], batch: int) -> float | None:
    """A peak for `batch` on the line through the two largest measured batches (None: fewer than two)."""
    measured = sorted((t["batch_size"], t["peak_bytes"]) for t in trials if t.get("peak_bytes") is not None)
    if len(measured) < 2:
        return None
    (b0, m0), (b1, m1) = measured[-2], measured[-1]
    return m1 + (batch - b1) * max(m1 - m0, 0) / (b1 - b0)


def any_rank(flag: bool, runtime: Any) -> bool:
    """True when `flag` holds on any rank (every rank takes the same search path)."""
    if not runtime.distributed:
        return flag
    return bool(runtime.all_reduce_sum(torch.tensor([float(flag)], device=runtime.device)).item() > 0)


def find_batch(cfg: Any, measure_trial: Callable[[Any], dict[str, int]], probe: MemoryProbe, runtime: Any,
               train_samples: int | None) -> dict[str, Any]:
    """Search the largest per-device batch that fits; returns the record plan.json keeps.

    Args:
        measure_trial: builds the run at cfg (its data.batch_size set) and returns one step's memory
            (plan_measure.measure_memory); may raise torch.cuda.OutOfMemoryError.
        train_samples: this device's share of the train split (the largest batch that means anything;
            None: unknown, then plan.max_batch or 65536 bounds the search).
    """
    opts = cfg.plan
    if runtime.distributed and probe.cuda:
        raise UserError("plan.find_batch=true with trainer.devices>1 on GPUs: an out-of-memory error on one rank "
                        "would hang the others; search on one GPU (trainer.devices=1), or set data.batch_size yourself")
    if not probe.resettable:
        raise UserError("plan.find_batch=true on the CPU needs Linux's /proc to measure each batch's peak; "
                        "set data.batch_size yourself")
    budget = int(opts.memory_budget_gb * GB) if opts.memory_budget_gb else (None if probe.cuda else probe.available())
    cap = max(1, min(b for b in (train_samples, opts.max_batch, 65536) if b))
    available = probe.available()
    trials: list[dict[str, Any]] = []

    def fits(batch: int) -> bool:
        trial: dict[str, Any] = {"batch_size": batch, "peak_bytes": None, "oom": False, "predicted": False}
        trials.append(trial)
        guess = None if probe.cuda else extrapolated_peak(trials[:-1], batch)
        if any_rank(guess is not None and guess > available, runtime):
            trial["predicted"], trial["fits"] = True, False
            log.info(f"find_batch: batch {batch} would need ~{guess / GB:.2f} GB, more than the "
                     f"{available / GB:.2f} GB available: not tried")
            return False
        trial_cfg = copy.deepcopy(cfg)
        trial_cfg.data.batch_size = batch
        try:
            trial["peak_bytes"] = measure_trial(trial_cfg)["peak"]
        except torch.cuda.OutOfMemoryError:
            trial["oom"] = True
        finally:
            probe.release()
        over = trial["oom"] or (budget is not None and trial["peak_bytes"] > budget)
        trial["fits"] = not any_rank(over, runtime)
        peak = "out of memory" if trial["oom"] else f"peak {trial['peak_bytes'] / GB:.3f} GB"
        log.info(f"find_batch: batch {batch}: {peak} -> {'fits' if trial['fits'] else 'does not fit'}")
        return trial["fits"]

    gc.freeze()  # what exists now is never a trial's garbage: each collection between trials skips it
    try:
        best, _ = search_batch(fits, int(cfg.data.batch_size), cap)
    finally:
        gc.unfreeze()
    if best is None:
        raise UserError(f"plan.find_batch=true: not even a batch of 1 fits in {_budget_text(budget, probe)}; "
                        "try trainer.precision=bf16, trainer.grad_checkpointing=true or a smaller model")
    world, accum = runtime.world_size, int(cfg.trainer.grad_accum)
    global_batch = global_batch_size(best, world, accum)
    return {"batch_size": best, "global_batch": global_batch, "lr": scaled_lr(cfg.optimizer, global_batch),
            "lr_scaled": cfg.optimizer.lr_base is not None, "budget_bytes": budget,
            "limit": _budget_text(budget, probe), "capped_at": cap if best == cap else None, "trials": trials}


def _budget_text(budget: int | None, probe: MemoryProbe) -> str:
    where = str(probe.device)
    return f"{where} memory (no out-of-memory error)" if budget is None else f"{budget / GB:.2f} GB on {where}"
