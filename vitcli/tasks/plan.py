"""`vitcli plan`'s library: what a training run will cost, measured before launching it.

The run is built exactly as `vitcli train` builds it (engine/build.py's build_parts, through the
Trainer), then measured on its own device (tasks/plan_measure.py): optimizer steps fed by the train
loader (after warm-up ones), the same steps on one cached batch (the model alone), the loader alone,
a few evaluation batches, one step's memory and an epoch end. From those: images/s, whether the
loader or the model limits the step, peak memory split into parameters, gradients, optimizer state
and activations, the time per epoch and the whole run's ETA:

    eta_s = setup_s + first_use_s + epochs x (train_epoch_s + eval_epoch_s + epoch_end_s)

(setup_s: imports and building the run; first_use_s: what the first training steps and the first
evaluation batch take beyond their steady pace, paid once.)

Everything goes into <plan.out>/plan.json (runs/plans/<stamp>/ by default): no config.yaml,
summary.json or checkpoint, so `vitcli runs` lists no run for a plan. Under DDP rank 0 writes
(commands/plan.py starts the ranks for trainer.devices=N).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from vitcli.core.errors import UserError
from vitcli.core.io import write_json

log = logging.getLogger("vitcli")

PLAN_FILE = "plan.json"
DATA_BOUND_SHARE = 1.0  # the loader alone is slower than the model alone


def validate_plan_options(opts: Any) -> None:
    if opts.warmup < 0:
        raise UserError(f"plan.warmup={opts.warmup} must be >= 0 (optimizer steps before timing)")
    if opts.steps < 1:
        raise UserError(f"plan.steps={opts.steps} must be at least 1 (optimizer steps timed)")
    if opts.eval_batches < 1:
        raise UserError(f"plan.eval_batches={opts.eval_batches} must be at least 1")
    if opts.memory_budget_gb is not None and opts.memory_budget_gb <= 0:
        raise UserError(f"plan.memory_budget_gb={opts.memory_budget_gb} must be positive (or null: the RAM available)")
    if opts.max_batch is not None and opts.max_batch < 1:
        raise UserError(f"plan.max_batch={opts.max_batch} must be at least 1 (or null: the train split's size)")


def build_trainer(cfg: Any, out_dir: Path) -> Any:
    """The run's Trainer (its parts built as `vitcli train` builds them); nothing is written."""
    from vitcli.engine.trainer import Trainer

    return Trainer(cfg, out_dir)


def memory_trial(cfg: Any, out_dir: Path, probe: Any) -> dict[str, int]:
    """find_batch's measurement at cfg's batch: build, one warm optimizer step, one measured step."""
    from vitcli.tasks.plan_measure import measure_memory, run_steps, train_batches

    trainer = build_trainer(cfg, out_dir)
    batches = train_batches(trainer)
    run_steps(trainer, (next(batches) for _ in range(cfg.trainer.grad_accum)))
    return measure_memory(trainer, batches, probe)


def per_rank(total: int | None, world: int) -> int | None:
    return None if total is None else -(-int(total) // world)


def measure_run(trainer: Any, opts: Any, probe: Any) -> dict[str, Any]:
    """Every measurement of plan_measure.py on a built Trainer, in an order that leaves each one
    undisturbed by the last (memory after the timed steps, evaluation after training)."""
    from vitcli.tasks import plan_measure as m

    batches = m.train_batches(trainer)
    step = m.measure_steps(trainer, batches, opts.warmup, opts.steps, probe)
    memory = m.measure_memory(trainer, batches, probe)
    cached = next(batches)
    model = m.measure_model(trainer, cached, opts.steps, probe)
    del cached
    batches.close()
    loader = m.measure_loader(trainer, opts.warmup, opts.steps * trainer.cfg.trainer.grad_accum, probe)
    evaluation = m.measure_eval(trainer, opts.eval_batches, probe)
    return {"step": step, "model": model, "loader": loader, "eval": evaluation, "memory": memory,
            "epoch_end_s": m.measure_epoch_end(trainer)}


def estimate(trainer: Any, measured: dict[str, Any], setup_s: float) -> dict[str, Any]:
    """Time per epoch and the run's ETA from the measured per-batch times (this rank's shard)."""
    cfg, parts, world = trainer.cfg, trainer.parts, trainer.runtime.world_size
    step, evaluation = measured["step"], measured["eval"]
    batches = len(parts.train_loader)
    train_epoch_s = measured["loader"].startup_s + batches * step.per_item_s
    split = parts.select_split
    eval_samples = per_rank(parts.data.info.get(f"{split}_samples"), world)
    if eval_samples is None:  # a stream without a count: full batches
        eval_samples = len(parts.val_loader) * int(cfg.data.eval_batch_size or 2 * cfg.data.batch_size)
    copies = 2 if parts.ema is not None else 1  # the EMA weights are evaluated too
    eval_epoch_s = copies * (evaluation.startup_s + eval_samples / evaluation.images_per_s)
    epoch_s = train_epoch_s + eval_epoch_s + measured["epoch_end_s"]
    first_use_s = step.warmup_extra_s + evaluation.warmup_extra_s
    epochs = int(cfg.trainer.epochs)
    return {"setup_s": setup_s, "first_use_s": first_use_s, "train_epoch_s": train_epoch_s,
            "eval_epoch_s": eval_epoch_s, "epoch_end_s": measured["epoch_end_s"], "epoch_s": epoch_s, "epochs": epochs,
            "eta_s": setup_s + first_use_s + epochs * epoch_s, "batches_per_epoch": batches, "eval_split": split,
            "eval_samples": eval_samples, "eval_passes": copies}


def throughput(trainer: Any, measured: dict[str, Any]) -> dict[str, Any]:
    step, model, loader, evaluation = (measured[k] for k in ("step", "model", "loader", "eval"))
    world, accum = trainer.runtime.world_size, trainer.cfg.trainer.grad_accum
    share = model.images_per_s / loader.images_per_s  # the loader's time per image over the model's
    return {"images_per_s": step.images_per_s, "global_images_per_s": step.images_per_s * world,
            "step_s": step.per_item_s * accum, "batch_s": step.per_item_s,
            "model_images_per_s": model.images_per_s, "loader_images_per_s": loader.images_per_s,
            "loader_startup_s": loader.startup_s, "loader_share": share,
            "bound": "data" if share >= DATA_BOUND_SHARE else "compute",
            "eval_images_per_s": evaluation.images_per_s, "eval_startup_s": evaluation.startup_s}


def describe_run(cfg: Any, trainer: Any) -> dict[str, Any]:
    import torch

    runtime, parts = trainer.runtime, trainer.parts
    device = runtime.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    return {"model": cfg.model.name, "timm_name": cfg.model.timm_name, "num_params": parts.num_params,
            "data": cfg.data.name, "train_samples": parts.data.info.get("train_samples"),
            "device": str(device), "device_name": name, "precision": runtime.precision,
            "strategy": str(OmegaConf.select(cfg, "trainer.strategy", default="ddp")),
            "world_size": runtime.world_size, "batch_size": int(cfg.data.batch_size),
            "grad_accum": int(cfg.trainer.grad_accum), "global_batch": parts.global_batch, "lr": parts.lr,
            "steps_per_epoch": parts.steps_per_epoch}


def plan_run(cfg: Any, out_dir: Path, started: float, overrides: list[str] | None = None) -> dict[str, Any]:
    """Measure the run `cfg` describes; write <out_dir>/plan.json (rank 0) and print the report.

    Args:
        cfg: the composed plan config (the train config plus `plan:`).
        started: time.perf_counter() when the command started (imports and building count as setup).
    """
    import torch

    from vitcli.core.runtime import Runtime
    from vitcli.engine.trainer import Trainer  # noqa: F401  (imported here: its import time is setup)
    from vitcli.tasks.plan_batch import find_batch
    from vitcli.tasks.plan_memory import MemoryProbe
    from vitcli.tasks.plan_report import report_lines

    opts = cfg.plan
    validate_plan_options(opts)
    cfg.logger.name = "csv"  # a plan sends nothing to W&B
    out_dir = Path(out_dir)
    ready_s = time.perf_counter() - started
    runtime = Runtime.create(cfg.trainer.device, cfg.trainer.precision)
    probe = MemoryProbe(runtime.device)
    search = None
    if opts.find_batch:
        samples = train_samples(cfg, runtime.world_size)
        search = find_batch(cfg, lambda c: memory_trial(c, out_dir, probe), probe, runtime, samples)
        if not search["trials"][0]["fits"]:  # the configured batch does not fit: measure the one found
            log.info(f"data.batch_size={cfg.data.batch_size} does not fit; measuring "
                     f"data.batch_size={search['batch_size']}")
            cfg.data.batch_size = search["batch_size"]
    try:
        t0 = time.perf_counter()
        trainer = build_trainer(cfg, out_dir)
        setup_s = ready_s + time.perf_counter() - t0
        measured = measure_run(trainer, opts, probe)
    except torch.cuda.OutOfMemoryError as err:
        raise UserError(f"data.batch_size={cfg.data.batch_size} does not fit on {runtime.device} (out of memory); "
                        "lower it, or find the largest that fits with plan.find_batch=true") from err
    plan = {"run": describe_run(cfg, trainer), "throughput": throughput(trainer, measured),
            "memory": {"kind": probe.kind, **{f"{k}_bytes": v for k, v in measured["memory"].items()}},
            "time": estimate(trainer, measured, setup_s), "find_batch": search,
            "measured": {"warmup_steps": opts.warmup, "steps": opts.steps, "eval_batches": opts.eval_batches},
            "overrides": list(overrides or [])}
    if trainer.runtime.is_main:
        write_json(out_dir / PLAN_FILE, plan)
        print("\n".join(report_lines(plan, out_dir / PLAN_FILE)), flush=True)
    return plan


def train_samples(cfg: Any, world: int) -> int | None:
    """This device's share of the train split (the largest batch worth trying); None for a stream
    that does not know its size. Builds the data once more, on the CPU."""
    import copy

    from vitcli.data import create_data
    from vitcli.data.normalization import resolve_normalization

    data_cfg = copy.deepcopy(cfg)
    resolve_normalization(data_cfg)
    return per_rank(create_data(data_cfg, device="cpu").info.get("train_samples"), world)
