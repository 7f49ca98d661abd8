"""The lines `vitcli plan` prints from its plan.json record."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any


def human_bytes(n: float | None) -> str:
    """
    >>> human_bytes(3 * 1024**2), human_bytes(1536 * 1024**3)
    ('3.0 MB', '1.50 TB')
    """
    if n is None:
        return "-"
    for unit, size in (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= size:
            return f"{n / size:.2f} {unit}" if unit in ("TB", "GB") else f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def human_seconds(s: float) -> str:
    """
    >>> human_seconds(42.4), human_seconds(3725)
    ('42 s', '1:02:05')
    """
    return f"{s:.0f} s" if s < 60 else str(datetime.timedelta(seconds=round(s)))


def memory_line(mem: dict[str, Any]) -> str:
    what = "CUDA max allocated" if mem["kind"] == "cuda_max_allocated" else "CPU peak RSS"
    parts = ", ".join(f"{k} {human_bytes(mem[f'{k}_bytes'])}" for k in ("params", "grads", "optimizer", "activations"))
    return f"  memory      peak {human_bytes(mem['peak_bytes'])} ({what}): {parts}, other {human_bytes(mem['other_bytes'])}"


def find_batch_lines(search: dict[str, Any] | None, run: dict[str, Any]) -> list[str]:
    if not search:
        return []
    capped = f" (the train split's size per device: {search['capped_at']})" if search["capped_at"] else ""
    lr = (f"lr {search['lr']:.3g} (optimizer.lr_base scaled)" if search["lr_scaled"]
          else f"lr {search['lr']:.3g} (optimizer.lr; set optimizer.lr_base to scale it with the batch)")
    tried = ", ".join(str(t["batch_size"]) + ("" if t["fits"] else "x") for t in search["trials"])
    return [f"  find_batch  largest batch within {search['limit']}: {search['batch_size']} per device{capped}",
            f"              -> global batch {search['global_batch']} "
            f"({run['world_size']} device(s) x {run['grad_accum']} accumulation), {lr}",
            f"              tried {tried} (x: does not fit)"]


def report_lines(plan: dict[str, Any], path: Path) -> list[str]:
    run, tp, t = plan["run"], plan["throughput"], plan["time"]
    world = f" x {run['world_size']} ranks ({run['strategy']})" if run["world_size"] > 1 else ""
    bound = (f"data-bound: the loader alone is slower than the model ({tp['loader_share']:.2f} x its time per image)"
             if tp["bound"] == "data" else
             f"compute-bound: the loader alone takes {100 * tp['loader_share']:.0f}% of the model's time per image")
    ema = " (raw + EMA weights)" if t["eval_passes"] > 1 else ""
    return [
        f"vitcli plan: {run['model']} ({run['num_params'] / 1e6:.2f}M params) on {run['data']}, "
        f"{run['device_name']}{world}, precision {run['precision']}",
        f"  batch       {run['batch_size']} per device, global {run['global_batch']}, lr {run['lr']:.3g}, "
        f"{t['batches_per_epoch']} batches per epoch",
        f"  step        {tp['images_per_s']:,.1f} img/s per device ({1000 * tp['step_s']:.1f} ms per optimizer step)",
        f"  model       {tp['model_images_per_s']:,.1f} img/s on one cached batch",
        f"  loader      {tp['loader_images_per_s']:,.1f} img/s on its own -> {bound}",
        f"  eval        {tp['eval_images_per_s']:,.1f} img/s on {t['eval_split']}{ema}",
        memory_line(plan["memory"]),
        f"  epoch       {human_seconds(t['epoch_s'])} = train {t['train_epoch_s']:.1f} s + eval {t['eval_epoch_s']:.1f} s "
        f"+ checkpoints and curves {t['epoch_end_s']:.1f} s",
        f"  ETA         {human_seconds(t['eta_s'])} = setup {t['setup_s']:.1f} s + first steps {t['first_use_s']:.1f} s "
        f"+ {t['epochs']} epochs x {t['epoch_s']:.1f} s (every epoch run to the end)",
        *find_batch_lines(plan["find_batch"], run),
        f"wrote {path}",
    ]
