"""Class-per-folder datasets: any `imagefolder` and ImageNet-1k (`train/<wnid>/`, `val/<wnid>/`).

Files are found by the folder index (folder_index.py: cached, compact, rank 0 only under DDP).
Class index = sorted folder names of the train split (for ImageNet: sorted
wnids, timm's order), or the order of `data.class_map` (one folder name per
line, optionally followed by a display name).
"""

from __future__ import annotations

import os
from pathlib import Path

from vitcli.core.errors import UserError
from vitcli.data.files import IMG_EXTENSIONS, FileSplit
from vitcli.data.sources.folder_index import cache_dir, index_folders, rank0_only
from vitcli.data.sources.miniplaces import (
    check_no_empty_class,
    enumerate_unlabeled,
    list_lines,
)


def read_class_map(path: Path) -> tuple[list[str], list[str]]:
    """Folder names and display names, in label order."""
    folders, names = [], []
    for _, line in list_lines(path):
        folder, _, name = line.partition(" ")
        folders.append(folder)
        names.append(name.strip() or folder)
    if len(set(folders)) != len(folders):
        raise UserError(f"class map {path} lists a folder twice")
    return folders, names


def scan_split(root: Path, split: str, folders: list[str], where: str, cache: Path | None) -> FileSplit:
    """Every image under root/<split>/<class>/ (recursive), labelled by the class folder.

    Read through the folder index (folder_index.py): bytes names, one buffer for all paths,
    cached between runs, and read by DDP rank 0 only."""
    base = root / split
    index = set(folders)
    extra = sorted(d.name for d in os.scandir(base) if d.is_dir() and d.name not in index)
    if extra:
        raise UserError(f"{base / extra[0]} is not a class of {where} ({len(folders)} classes); "
                        "remove it or list it in data.class_map")
    found = rank0_only(lambda: index_folders(root, split, folders, IMG_EXTENSIONS, cache)[0])
    if not len(found.labels):
        raise UserError(f"no images ({'/'.join(IMG_EXTENSIONS)}) under {base}/<class>/")
    ids = found.rel_paths
    return FileSplit(ids.with_prefix(f"{root}/"), found.labels, ids)


def load_imagefolder(data_cfg, layout: str = "imagefolder") -> tuple[dict[str, FileSplit], list[str]]:
    expected = f"{data_cfg.train_split}/<class>/*.jpg and {data_cfg.val_split}/<class>/*.jpg under data.root"
    if not data_cfg.root:
        raise UserError(f"data={layout} needs data.root=DIR holding {expected}")
    root = Path(data_cfg.root).expanduser()
    for split in (data_cfg.train_split, data_cfg.val_split):
        if not (root / split).is_dir():
            raise UserError(f"{root / split} does not exist; data={layout} expects {expected}")
    if data_cfg.class_map:
        folders, names = read_class_map(Path(data_cfg.class_map).expanduser())
    else:
        folders = sorted(d.name for d in (root / data_cfg.train_split).iterdir() if d.is_dir())
        names = list(folders)
        if not folders:
            raise UserError(f"{root / data_cfg.train_split} has no class folders; data={layout} expects {expected}")
    where = f"data.class_map={data_cfg.class_map}" if data_cfg.class_map else str(root / data_cfg.train_split)
    cache = cache_dir(data_cfg.cache_dir)
    splits = {key: scan_split(root, split, folders, where, cache)
              for key, split in (("train", data_cfg.train_split), ("val", data_cfg.val_split))}
    check_no_empty_class(splits["train"], names, str(root / data_cfg.train_split))
    if data_cfg.test_split and (root / data_cfg.test_split).is_dir():
        test = enumerate_unlabeled(root, data_cfg.test_split)
        if len(test):
            splits["test"] = test
    return splits, names


def load_imagenet(data_cfg) -> tuple[dict[str, FileSplit], list[str]]:
    """ImageNet-1k after valprep; class index = sorted wnids (timm's order)."""
    if data_cfg.root:
        val = Path(data_cfg.root).expanduser() / data_cfg.val_split
        if val.is_dir() and not any(d.is_dir() for d in val.iterdir()):
            raise UserError(f"{val} holds no <wnid>/ folders; sort the validation images into "
                            "val/<wnid>/ first (the usual valprep.sh step)")
    return load_imagefolder(data_cfg, layout="imagenet")
