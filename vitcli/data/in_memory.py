"""A file dataset decoded once into memory (`data.format=memory`, and `auto` when it fits).

Decoding and augmenting every image again in each epoch costs loader workers that share the
cores with the step; a small dataset decoded once feeds the batched ArrayLoader instead (the
path of digits and packed arrays: augmentation as batch ops). Only where that changes nothing
the model sees: every image already data.img_size square (no resize, no crop the user did not
ask for) and an eval crop_pct of 1.0 (the array path evaluates the whole image, as the file
path does at 1.0). `auto` checks the size of the decoded splits against data.memory_mb before
decoding anything and falls back to per-sample decoding, with one line, at the first image of
another size; `memory` stops with that line instead.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from PIL import Image

from vitcli.core.errors import UserError
from vitcli.data.arrays import ArraySplit
from vitcli.data.files import DECODE_ERRORS, FileSplit, resolve_num_workers, take
from vitcli.data.normalization import crop_pct_of
from vitcli.data.pack import Kept, decoded

log = logging.getLogger("vitcli")

POOL_FROM = 4096  # fewer files decode faster in this process than a worker pool starts


class OtherSize(Exception):
    """An image that is not img_size square: the reason the dataset stays on disk."""


def hold_in_memory(cfg: Any, splits: dict[str, Any]) -> tuple[dict[str, ArraySplit], dict] | None:
    """The splits decoded into ArraySplits and the DataModule info, or None when data.format=auto
    keeps the files (the reason logged). data.format=memory raises UserError instead of None.

    Args:
        cfg: the run's config (data.format, img_size, memory_mb, num_workers, max_bad_fraction,
            augmentation.crop_pct).
        splits: the file splits by name (train, val, maybe test) as the source listed them.
    """
    d = cfg.data
    forced = str(d.format) == "memory"
    size = int(d.img_size)
    try:
        why_not = reason_to_keep_files(cfg, splits)
        if why_not:
            if forced:
                raise UserError(f"data.format=memory: {why_not}; use data.format=files")
            log.debug(f"data.format=auto: decoding per sample ({why_not})")
            return None
        t0 = time.perf_counter()
        workers = resolve_num_workers(d.num_workers)
        held = {name: decode_split(split, name, size, workers, d.max_bad_fraction) for name, split in splits.items()}
    except OtherSize as err:
        if forced:
            raise UserError(f"data.format=memory needs every image at data.img_size ({size}x{size}): {err}; "
                            "use data.format=files (decoded per sample) or `vitcli prepare` to pack one size") from None
        log.info(f"data.format=auto: decoding per sample, not in memory: {err}")
        return None
    arrays = {name: split for name, (split, _) in held.items()}
    held_mib = round(sum(a.images.nbytes for a in arrays.values()) / 2**20, 1)
    info: dict[str, Any] = {"data_format": "memory", "memory_held_mib": held_mib}  # not the limit, data.memory_mb
    for name, (_, skipped) in held.items():
        info[f"skipped_files_{name}"] = skipped
    info["skipped_files"] = sum(skipped for _, skipped in held.values())
    counts = ", ".join(f"{len(a)} {name}" for name, a in arrays.items())
    log.info(f"data in memory: {counts} images at {size}x{size} ({held_mib} MiB) decoded once in "
             f"{time.perf_counter() - t0:.1f} s (data.format=files decodes them each epoch instead)")
    return arrays, info


def reason_to_keep_files(cfg: Any, splits: dict[str, Any]) -> str | None:
    """Why the splits cannot be held in memory as they are, from the config and one image (None: they can)."""
    d, size = cfg.data, int(cfg.data.img_size)
    if str(d.format) == "auto" and not all(isinstance(s, FileSplit) for s in splits.values()):
        return "auto holds image folders only (data.format=memory decodes shards and hf datasets too)"
    crop_pct = crop_pct_of(cfg.get("augmentation") if hasattr(cfg, "get") else None)
    if crop_pct != 1.0:
        return f"augmentation.crop_pct={crop_pct} crops the eval images; the in-memory path evaluates whole images"
    mib = sum(len(s) for s in splits.values()) * size * size * 3 / 2**20
    if str(d.format) == "auto" and mib > d.memory_mb:
        return f"{mib:.0f} MiB decoded at {size}x{size} exceeds data.memory_mb={d.memory_mb}"
    first = splits["train"]
    if isinstance(first, FileSplit) and len(first):
        try:
            with Image.open(first.paths[0]) as img:
                if img.size != (size, size):
                    raise OtherSize(f"{first.ids[0]} is {img.size[0]}x{img.size[1]}")
        except DECODE_ERRORS:
            pass  # counted as unreadable when decoded
    return None


def decode_split(split: Any, name: str, size: int, workers: int, max_bad: float) -> tuple[ArraySplit, int]:
    """Every readable image of `split` as one uint8 N x size x size x 3 array, in the split's order,
    and how many were skipped as unreadable. Raises OtherSize at the first image of another size."""
    images = np.empty((len(split), size, size, 3), dtype=np.uint8)
    kept = Kept(split, name, max_bad)
    for i, arr, src, err in decoded(split, size, workers if len(split) >= POOL_FROM else 0):
        if err is None and tuple(src) != (size, size):
            raise OtherSize(f"{split.ids[i]} is {src[0]}x{src[1]}")
        if kept.add(i, src, err):
            images[len(kept.rows) - 1] = arr
    kept.warn()
    rows = np.asarray(kept.rows, dtype=np.int64)
    if len(rows) < len(split):
        images = images[:len(rows)].copy()
    ids = list(take(split.ids, rows))
    return ArraySplit(images, np.asarray(split.labels[rows], dtype=np.int64), ids), len(split) - len(rows)
