"""`vitcli prepare`: pack the splits of a file dataset (data/pack.py writes and reads the format),
or write any dataset as WebDataset shards (format=wds, data/shard_writer.py).

Each split is written to a hidden temp folder and renamed when complete, then listed in the
manifest: a killed prepare leaves nothing that looks finished, and a rerun skips finished splits.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from vitcli.core.errors import UserError
from vitcli.core.io import write_json
from vitcli.data import ARRAY_SOURCES, load_array_source
from vitcli.data.pack import (
    FORMAT_VERSION,
    MANIFEST,
    native_size,
    pack_split,
    packed_dir,
    read_manifest,
)
from vitcli.data.shard_writer import write_shards
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
    source = Path(data_cfg.root).expanduser().resolve() if data_cfg.root else data_cfg.dataset
    manifest = {**header, "root": str(source),
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


def source_splits(data_cfg: Any) -> tuple[dict, list[str]]:
    """Any source's splits: digits / synthetic in memory, everything else from its files."""
    if data_cfg.name in ARRAY_SOURCES:
        return load_array_source(data_cfg)
    return load_file_source(data_cfg)


def prepare_shards(data_cfg: Any, out: Path, shard_size: int, splits: list[str] | None, overwrite: bool,
                   show_progress: bool = True) -> dict:
    """Write the requested splits (default: all) as shards + wids index + classes.txt under `out`."""
    sources, class_names = source_splits(data_cfg)
    with progress_bars(show_progress) as progress:
        return write_shards(sources, class_names, out, shard_size, data_cfg.max_bad_fraction, splits, overwrite,
                            progress)


@contextmanager
def progress_bars(enabled: bool):
    """A factory of per-split progress callbacks: a rich bar on a terminal, else nothing."""
    if not (enabled and sys.stderr.isatty()):
        yield lambda name, total: (lambda n: None)
        return

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True) as bars:
        def factory(name: str, total: int):
            task = bars.add_task(f"writing {name}", total=total)
            return lambda n: bars.advance(task, n)
        yield factory
