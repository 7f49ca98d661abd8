"""Writing a packed dataset (`vitcli prepare`): every split of a file dataset decoded once
into uint8 arrays (layout in data/packed.py, which reads them).

A split is written into a hidden temp folder and renamed when complete, then listed
in the manifest: a killed prepare leaves nothing that looks finished, and a rerun
skips the splits the manifest already lists.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from vitcli.data.files import DECODE_ERRORS, FileSplit, load_rgb
from vitcli.data.packed import FORMAT_VERSION, MANIFEST, packed_dir, read_manifest
from vitcli.errors import UserError
from vitcli.io import write_json

log = logging.getLogger("vitcli")


def fit(img, size: int):
    """Resize the shorter side to `size` (bicubic) and centre-crop; no-op at the native size."""
    from PIL import Image

    if img.size == (size, size):
        return img
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
    left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
    return img.crop((left, top, left + size, top + size))


def decode(job: tuple[str, int]) -> tuple[np.ndarray | None, tuple[int, int] | None, str | None]:
    """(path, size) -> (uint8 HxWx3 or None, source (w, h), error); top-level for worker pools."""
    path, size = job
    try:
        img = load_rgb(path)
    except DECODE_ERRORS as err:
        return None, None, f"{type(err).__name__}: {err}"[:120]
    return np.asarray(fit(img, size), dtype=np.uint8), img.size, None


def native_size(split: FileSplit) -> int:
    for path in split.paths[:50]:
        try:
            return min(load_rgb(path).size)
        except DECODE_ERRORS:
            continue
    raise UserError(f"none of the first 50 files of {split.ids[0].split('/')[0]} can be decoded")


def pack_split(split: FileSplit, dest: Path, size: int, workers: int, max_bad: float) -> dict:
    """Decode every file of `split` into dest/ (via a temp folder renamed at the end)."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n, t0 = len(split), time.perf_counter()
    images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    keep, bad, sizes = [], [], Counter()
    jobs = [(p, size) for p in split.paths]
    if workers > 1:
        import multiprocessing as mp

        pool = mp.Pool(workers)
        results = pool.imap(decode, jobs, chunksize=64)
    else:
        pool, results = None, map(decode, jobs)
    try:
        for i, (arr, src, err) in enumerate(results):
            if arr is None:
                bad.append(f"{split.paths[i]} ({err})")
                if len(bad) > max_bad * n:
                    raise UserError(f"more than {max_bad:.0%} of {n} files in {dest.name} cannot be decoded, "
                                    f"e.g. {bad[0]}; check the dataset copy")
                continue
            images[len(keep)] = arr
            keep.append(i)
            sizes[f"{src[0]}x{src[1]}"] += 1
    finally:
        if pool is not None:
            pool.terminate()
    images.flush()
    del images
    if bad:  # rare: rewrite without the unused tail rows
        log.warning(f"skipped {len(bad)} unreadable file(s) in {dest.name}: {', '.join(bad[:3])}")
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


def prepare(data_cfg: Any, size: int | None, splits: list[str] | None, workers: int, overwrite: bool) -> dict:
    """Pack the requested splits (default: all) of a file dataset; returns the manifest."""
    from vitcli.data.sources import load_file_source

    sources, class_names = load_file_source(data_cfg)
    wanted = list(splits) if splits else list(sources)
    unknown = [s for s in wanted if s not in sources]
    if unknown:
        raise UserError(f"prepare.splits: '{unknown[0]}' is not a split of data={data_cfg.name}; "
                        f"choose from {list(sources)}")
    out = packed_dir(data_cfg)
    out.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(out)
    size = size or (manifest["size"] if manifest else native_size(sources["train"]))
    header = {"format_version": FORMAT_VERSION, "dataset": data_cfg.name, "size": size, "class_names": class_names}
    if manifest and not overwrite:
        old = {k: manifest.get(k) for k in header}
        if old != header:
            diff = next(k for k in header if old[k] != header[k])
            raise UserError(f"{out} already holds a pack with a different {diff} ({old[diff]!r} != {header[diff]!r}); "
                            "use another data.packed_dir or prepare.overwrite=true")
    else:
        manifest = None
    manifest = {**header, "root": str(Path(data_cfg.root).expanduser().resolve()),
                "splits": dict(manifest["splits"]) if manifest else {}}
    for split in wanted:
        if split in manifest["splits"] and (out / split / "images.npy").is_file():
            log.info(f"{split}: already packed ({manifest['splits'][split]['count']} images), skipping")
            continue
        log.info(f"{split}: packing {len(sources[split])} images at {size}x{size} into {out / split}")
        manifest["splits"][split] = pack_split(sources[split], out / split, size, workers, data_cfg.max_bad_fraction)
        write_json(out / MANIFEST, manifest)  # the split counts as finished from here on
        log.info(f"{split}: {manifest['splits'][split]['count']} images in {manifest['splits'][split]['seconds']} s")
    write_json(out / MANIFEST, manifest)
    return manifest
