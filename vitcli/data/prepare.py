"""`vitcli prepare`: pack the splits of a file dataset (data/pack.py writes and reads the format).

Each split is written to a hidden temp folder and renamed when complete, then listed in the
manifest: a killed prepare leaves nothing that looks finished, and a rerun skips finished splits.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vitcli.core.errors import UserError
from vitcli.core.io import write_json
from vitcli.data.pack import (
    FORMAT_VERSION,
    MANIFEST,
    native_size,
    pack_split,
    packed_dir,
    read_manifest,
)
from vitcli.data.sources import load_file_source

log = logging.getLogger("vitcli")


def prepare(data_cfg: Any, size: int | None, splits: list[str] | None, workers: int, overwrite: bool) -> dict:
    """Pack the requested splits (default: all) of a file dataset; returns the manifest."""
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
