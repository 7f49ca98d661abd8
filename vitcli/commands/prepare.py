"""`vitcli prepare data=miniplaces data.root=DIR`: decode a file dataset once into packed uint8 arrays;
`vitcli prepare format=wds out=DIR data=...`: write any dataset as WebDataset shards."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

import vitcli.core.config_store  # noqa: F401  (registers the schemas)
from vitcli.core.errors import UserError, report_user_errors

log = logging.getLogger("vitcli")


@report_user_errors
def run_prepare(cfg: DictConfig) -> dict:
    from vitcli.data import ARRAY_SOURCES
    from vitcli.data.pack import packed_dir
    from vitcli.data.prepare import prepare, prepare_shards
    from vitcli.data.sources import FILE_SOURCES

    opts = cfg.prepare
    if str(cfg.format) == "wds":
        if not cfg.out:
            raise UserError("prepare format=wds needs out=DIR (where the shards, their wids index and classes.txt go)")
        done = prepare_shards(cfg.data, Path(cfg.out).expanduser(), opts.shard_size,
                              list(opts.splits) if opts.splits else None, opts.overwrite)
        counts = ", ".join(f"{k} {v['count']} in {v['shards']} shard(s)" for k, v in done.items()) or "nothing new"
        log.info(f"wrote {cfg.data.name} as WebDataset shards into {cfg.out}: {counts}; "
                 f"train with data=wds data.root={cfg.out}")
        return done
    if cfg.data.name not in FILE_SOURCES:
        raise UserError(f"data={cfg.data.name} is already in memory; prepare packs {', '.join(FILE_SOURCES)} "
                        f"(format=wds writes {', '.join(ARRAY_SOURCES + FILE_SOURCES)} as shards)")
    if opts.size is not None and opts.size <= 0:
        raise UserError(f"prepare.size={opts.size} must be a positive number of pixels (e.g. prepare.size=128)")
    if cfg.out:
        cfg.data.packed_dir = cfg.out
    manifest = prepare(cfg.data, opts.size, list(opts.splits) if opts.splits else None, opts.workers, opts.overwrite)
    counts = ", ".join(f"{k} {v['count']}" for k, v in manifest["splits"].items())
    skipped = sum(v["skipped"] for v in manifest["splits"].values())
    log.info(f"packed {cfg.data.name} at {manifest['size']}px into {packed_dir(cfg.data)}: {counts}"
             f"{f' ({skipped} unreadable files skipped)' if skipped else ''}; "
             f"train with data.format=packed")
    return manifest


@hydra.main(version_base="1.3", config_path="pkg://vitcli.conf", config_name="prepare")
def main(cfg: DictConfig) -> None:
    run_prepare(cfg)
