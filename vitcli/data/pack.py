"""Packed datasets: every split of a file dataset decoded once into uint8 arrays
(`vitcli prepare` writes them; `data.format=packed` memory-maps them).

Layout of a packed directory (default `<data.root>/packed`):
    manifest.json           format version, size, class names, per-split counts (written last)
    <split>/images.npy      uint8 N x S x S x 3 (np.lib.format.open_memmap)
    <split>/labels.npy      int64 N (-1 when unknown)
    <split>/ids.txt         one split-prefixed id per line

A split is written into a hidden temp folder and renamed when complete, then listed
in the manifest: a killed prepare leaves nothing that looks finished, and a rerun
skips the splits the manifest already lists.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image, ImageOps

from vitcli.core.errors import UserError
from vitcli.data.arrays import ArraySplit
from vitcli.data.files import DECODE_ERRORS, FileSplit, load_rgb

log = logging.getLogger("vitcli")

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def packed_dir(data_cfg: Any) -> Path:
    if data_cfg.packed_dir:
        return Path(data_cfg.packed_dir).expanduser()
    if not data_cfg.root:
        raise UserError(f"data={data_cfg.name} data.format=packed needs data.root=DIR or data.packed_dir=DIR")
    return Path(data_cfg.root).expanduser() / "packed"


def read_manifest(out: Path) -> dict | None:
    path = out / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def load_packed(data_cfg: Any) -> tuple[dict[str, ArraySplit], list[str], dict]:
    """Memory-mapped splits of a prepared pack, its class names and manifest."""
    out = packed_dir(data_cfg)
    manifest = read_manifest(out)
    hint = f"vitcli prepare data={data_cfg.name} data.root={data_cfg.root}"
    if manifest is None:
        raise UserError(f"no packed dataset at {out} ({MANIFEST} missing); run `{hint}` first")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{out} was packed with format {manifest.get('format_version')}, this vitcli reads "
                        f"{FORMAT_VERSION}; rerun `{hint} prepare.overwrite=true`")
    if manifest.get("dataset") != data_cfg.name:
        raise UserError(f"{out} holds data={manifest.get('dataset')}, not data={data_cfg.name}")
    splits = {}
    for split in manifest["splits"]:
        d = out / split
        images = np.load(d / "images.npy", mmap_mode="r")
        labels = np.load(d / "labels.npy")
        ids = (d / "ids.txt").read_text().splitlines()
        splits[split] = ArraySplit(images, labels, ids)
    for need in ("train", "val"):
        if need not in splits:
            raise UserError(f"{out} has no packed '{need}' split; run `{hint}`")
    return splits, list(manifest["class_names"]), manifest


def fit_square(img: Image.Image, size: int) -> np.ndarray:
    """uint8 (size, size, 3): the shorter side resized to `size` (bicubic), centre-cropped (PIL's ImageOps.fit)."""
    return np.asarray(ImageOps.fit(img, (size, size), Image.Resampling.BICUBIC), dtype=np.uint8)


def decode(job: tuple[str, int]) -> tuple[np.ndarray | None, tuple[int, int] | None, str | None]:
    """(path, size) -> (uint8 HxWx3 or None, source (w, h), error); top-level for worker pools."""
    path, size = job
    try:
        img = load_rgb(path)
    except DECODE_ERRORS as err:
        return None, None, f"{type(err).__name__}: {err}"[:120]
    # shorter side to `size` and centre crop, as timm's eval resize + centre crop (a copy at the native size)
    return fit_square(img, size), img.size, None


_READER = None  # the decoding dataset of a non-file split, per pool worker (see read_job)


def open_reader(split: Any) -> None:
    global _READER
    _READER = split.open(None)


def read_job(job: tuple[int, int]) -> tuple[np.ndarray | None, tuple[int, int] | None, str | None]:
    """(row, size) of a shard / hf split -> as decode(); the reader is opened once per worker."""
    i, size = job
    try:
        img = _READER.read(i)
    except DECODE_ERRORS as err:
        return None, None, f"{type(err).__name__}: {err}"[:120]
    return fit_square(img, size), img.size, None


def native_size(split: Any) -> int:
    reader = split.open(None)
    for i in range(min(50, len(split))):
        try:
            return min(reader.read(i).size)
        except DECODE_ERRORS:
            continue
    raise UserError(f"none of the first 50 images of {split.ids[0].split('/')[0]} can be decoded")


def decoded(split: Any, size: int, workers: int) -> Iterator[tuple[int, np.ndarray | None, Any, str | None]]:
    """(row, uint8 size x size x 3 or None, source (w, h), error) for every sample of `split`, in
    order, decoded by `workers` processes (one: in this process). Image files are opened by path,
    shards / hf rows through the split's own dataset. Closing the generator stops the pool."""
    files = isinstance(split, FileSplit)
    jobs = [(p, size) for p in split.paths] if files else [(i, size) for i in range(len(split))]
    work, init = (decode, None) if files else (read_job, (open_reader, (split,)))
    if workers > 1:
        pool = mp.Pool(workers, *(init or ()))
        results = pool.imap(work, jobs, chunksize=64)
    else:
        if init:
            init[0](*init[1])
        pool, results = None, map(work, jobs)
    try:
        for i, (arr, src, err) in enumerate(results):
            yield i, arr, src, err
    finally:
        if pool is not None:
            pool.terminate()


class Kept:
    """The rows of a split that decoded, the ones that did not (more than `max_bad` of them aborts
    with one line) and the source sizes seen."""

    def __init__(self, split: Any, name: str, max_bad: float):
        self.split, self.name, self.max_bad = split, name, max_bad
        self.rows: list[int] = []
        self.bad: list[str] = []
        self.sizes: Counter = Counter()

    def add(self, i: int, src: Any, err: str | None) -> bool:
        """Record row i; False when it did not decode (skipped)."""
        if err is not None:
            self.bad.append(f"{self.split.paths[i]} ({err})")
            if len(self.bad) > self.max_bad * len(self.split):
                raise UserError(f"more than {self.max_bad:.0%} of {len(self.split)} files in {self.name} cannot be "
                                f"decoded, e.g. {self.bad[0]}; check the dataset copy")
            return False
        self.rows.append(i)
        self.sizes[f"{src[0]}x{src[1]}"] += 1
        return True

    def warn(self) -> None:
        if self.bad:
            log.warning(f"skipped {len(self.bad)} unreadable file(s) in {self.name}: {', '.join(self.bad[:3])}")


def pack_split(split: Any, dest: Path, size: int, workers: int, max_bad: float) -> dict:
    """Decode every file of `split` into dest/ (via a temp folder renamed at the end)."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n, t0 = len(split), time.perf_counter()
    images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    kept = Kept(split, dest.name, max_bad)
    for i, arr, src, err in decoded(split, size, workers):
        if kept.add(i, src, err):
            images[len(kept.rows) - 1] = arr
    keep, bad, sizes = kept.rows, kept.bad, kept.sizes
    images.flush()
    del images
    kept.warn()
    if bad:  # rare: rewrite without the unused tail rows
        full = np.load(tmp / "images.npy", mmap_mode="r")
        compact = np.lib.format.open_memmap(tmp / "compact.npy", mode="w+", dtype=np.uint8,
                                            shape=(len(keep), size, size, 3))
        for s in range(0, len(keep), 4096):
            compact[s:s + 4096] = full[s:min(s + 4096, len(keep))]
        compact.flush()
        del compact, full
        os.replace(tmp / "compact.npy", tmp / "images.npy")
    np.save(tmp / "labels.npy", split.labels[keep].astype(np.int64))
    (tmp / "ids.txt").write_text("".join(f"{split.ids[i]}\n" for i in keep))
    shutil.rmtree(dest, ignore_errors=True)  # a stale folder the manifest never listed
    os.replace(tmp, dest)
    return {"count": len(keep), "source_count": n, "skipped": len(bad), "skipped_paths": bad[:10],
            "source_sizes": dict(sizes.most_common(5)), "seconds": round(time.perf_counter() - t0, 2)}
