"""The measurements of `vitcli plan`, each on a built Trainer: optimizer steps fed by the real train
loader, the same steps on one cached batch (the model alone), the loader alone, a few evaluation
batches, one step's memory, and what an epoch end costs (checkpoints, curves). Only the Trainer's
own methods run the steps (forward_backward, optimizer_step, prepare_epoch), so whatever strategy
build_parts built (DDP, FSDP, compile, LoRA, distillation) is what gets measured.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from vitcli.core import runs
from vitcli.engine.checkpoints import Checkpointer
from vitcli.core.io import append_jsonl
from vitcli.engine.evaluate import evaluate
from vitcli.tasks.plan_memory import MemoryProbe, grad_bytes, optimizer_bytes, param_bytes
from vitcli.viz.plots import try_plot_curves


@dataclass
class Timing:
    """Per-item times of a timed iteration: the first item (with the iterator's start-up), the mean
    of the items after `skip` warm-up ones, and what the warm-up items took beyond that mean (costs
    of first use: allocations, autotuning, compilation, which a run pays once)."""

    first_s: float
    per_item_s: float
    images_per_s: float
    warmup_extra_s: float = 0.0

    @property
    def startup_s(self) -> float:
        """What starting the iterator costs beyond one item (e.g. loader workers)."""
        return max(self.first_s - self.per_item_s, 0.0)


class Stamped:
    """Up to `n` items of `iterable`, timing each from its request to the request of the next one
    (so the consumer's work on an item counts to it), with `sync` before each reading."""

    def __init__(self, iterable: Iterable[Any], n: int, sync: Callable[[], None]):
        self.iterable, self.n, self.sync = iterable, n, sync
        self.durations: list[float] = []
        self.images: list[int] = []

    def __iter__(self) -> Iterator[Any]:
        t = time.perf_counter()
        for item in itertools.islice(self.iterable, self.n):
            yield item
            self.sync()
            now = time.perf_counter()
            self.durations.append(now - t)
            self.images.append(int(item[1].shape[0]))
            t = now

    def timing(self, skip: int) -> Timing:
        if len(self.durations) <= skip:
            raise RuntimeError(f"timed {len(self.durations)} items, fewer than the {skip + 1} needed")
        seconds, images = sum(self.durations[skip:]), sum(self.images[skip:])
        per_item = seconds / len(self.durations[skip:])
        extra = max(sum(self.durations[:skip]) - skip * per_item, 0.0)
        return Timing(self.durations[0], per_item, images / max(seconds, 1e-12), extra)


def train_batches(trainer: Any, first_epoch: int | None = None) -> Iterator[Any]:
    """The train loader's batches as the loop sees them, epoch after epoch (prepare_epoch sets the
    epoch's order, MixUp switch, frozen backbone and train mode), from `first_epoch` (default: the
    first that trains the whole model, after trainer.freeze_backbone_epochs: the costlier regime)."""
    tcfg = trainer.cfg.trainer
    if first_epoch is None:
        first_epoch = min(tcfg.freeze_backbone_epochs, tcfg.epochs - 1)
    for epoch in itertools.count(first_epoch):
        trainer.prepare_epoch(epoch)
        yield from trainer.parts.train_loader


def run_steps(trainer: Any, batches: Iterable[Any]) -> None:
    """Optimizer steps over `batches`: every trainer.grad_accum micro-batches, one step."""
    accum = trainer.cfg.trainer.grad_accum
    for i, (x, y) in enumerate(batches, start=1):
        trainer.forward_backward(x, y, accum)
        if i % accum == 0:
            trainer.optimizer_step()


def measure_steps(trainer: Any, batches: Iterator[Any], warmup: int, steps: int, probe: MemoryProbe) -> Timing:
    """`warmup` then `steps` optimizer steps fed by the train loader, timed per micro-batch."""
    accum = trainer.cfg.trainer.grad_accum
    stamped = Stamped(batches, (warmup + steps) * accum, probe.sync)
    run_steps(trainer, stamped)
    return stamped.timing(warmup * accum)


def measure_model(trainer: Any, batch: Any, steps: int, probe: MemoryProbe) -> Timing:
    """The model alone: `steps` optimizer steps on one cached batch (no loader in the way)."""
    accum = trainer.cfg.trainer.grad_accum
    stamped = Stamped(itertools.repeat(batch), steps * accum, probe.sync)
    run_steps(trainer, stamped)
    return stamped.timing(0)


def measure_loader(trainer: Any, warmup: int, batches: int, probe: MemoryProbe) -> Timing:
    """The train loader alone (decoding, augmentation, the copy to the device), without the model."""
    loader = trainer.parts.train_loader
    loader.set_epoch(0)
    stamped = Stamped(itertools.chain.from_iterable(itertools.repeat(loader)), warmup + batches, probe.sync)
    for _ in stamped:
        pass
    return stamped.timing(warmup)


def measure_eval(trainer: Any, batches: int, probe: MemoryProbe) -> Timing:
    """Batches of the selection split through the loop's own evaluate(): a pass of one batch (with the
    first-use costs the run pays once: its warmup_extra_s), then a fresh pass whose first batch carries
    what every epoch's evaluation pays to start (e.g. loader workers) and whose next `batches` are timed."""
    p = trainer.parts
    first = Stamped(p.val_loader, 1, probe.sync)
    evaluate(p.model, first, trainer.runtime)
    stamped = Stamped(p.val_loader, 1 + batches, probe.sync)
    evaluate(p.model, stamped, trainer.runtime)
    timing = stamped.timing(1 if len(stamped.durations) > 1 else 0)
    timing.warmup_extra_s = max(first.durations[0] - timing.first_s, 0.0)
    return timing


def measure_memory(trainer: Any, batches: Iterator[Any], probe: MemoryProbe) -> dict[str, int]:
    """One optimizer step's peak, split into parameters, gradients and optimizer state (counted from
    the tensors, local shards), `other` (what was in use before the step besides parameters and
    optimizer state: data on the device, an EMA copy, a teacher; on the CPU also the process itself)
    and activations (with the step's temporaries: the peak minus all the rest)."""
    p, accum = trainer.parts, trainer.cfg.trainer.grad_accum
    p.optimizer.zero_grad(set_to_none=True)
    probe.reset_peak()
    before = probe.current()
    grads = 0
    for _ in range(accum):
        x, y = next(batches)
        trainer.forward_backward(x, y, accum)
        grads = max(grads, grad_bytes(p.model))
    trainer.optimizer_step()
    peak = max(probe.peak(), before)
    params, optim = param_bytes(p.model), optimizer_bytes(p.optimizer)
    other = max(before - params - optim, 0)
    return {"peak": peak, "params": params, "grads": grads, "optimizer": optim, "other": other,
            "activations": max(peak - params - grads - optim - other, 0)}


def measure_epoch_end(trainer: Any) -> float:
    """Seconds an epoch end spends besides evaluation: last.pt and best.pt saved and the curves
    drawn, as the loop does, into a temporary directory (never the plan's or a run's)."""
    state = trainer.state
    run_dir, checkpoints = state.run_dir, state.checkpoints
    with tempfile.TemporaryDirectory(prefix="vitcli-plan-") as tmp:
        state.run_dir = Path(tmp)
        # the write itself, in this thread (a run writes in the background: an upper bound)
        state.checkpoints = Checkpointer(Path(tmp), state.runtime.rank, state.sharded, background=False)
        try:
            record = {"kind": "epoch", "train_loss": 1.0, "val_loss": 1.0, "val_top1": 50.0, "val_top5": 90.0,
                      "lr": 1e-3}
            for epoch in (1, 2):
                append_jsonl(Path(tmp) / runs.METRICS_JSONL, {**record, "epoch": epoch})
            if state.main:
                try_plot_curves(Path(tmp))  # the first drawing loads fonts: not an epoch's cost
            t0 = time.perf_counter()
            state.save("model")
            state.draw_curves()
            return time.perf_counter() - t0
        finally:
            state.run_dir, state.checkpoints = run_dir, checkpoints
