"""Reading a packed dataset (written by data/pack.py, `vitcli prepare`): each split a uint8 (N, S, S, 3) .npy
read by memory map.

Layout of a packed directory (default `<data.root>/packed`):

    manifest.json           format version, size, class names, per-split counts (written last)
    <split>/images.npy      uint8 N x S x S x 3 (np.lib.format.open_memmap)
    <split>/labels.npy      int64 N (-1 when unknown)
    <split>/ids.txt         one split-prefixed id per line
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vitcli.data.arrays import ArraySplit
from vitcli.errors import UserError

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
