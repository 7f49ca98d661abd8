"""Image-file datasets (miniplaces, imagefolder, imagenet) as a DataModule, from files or a pack.

`data.format=files` decodes JPEGs per sample in a torch DataLoader (timm
transforms); `data.format=packed` memory-maps the arrays `vitcli prepare` wrote
and feeds them to the batched ArrayLoader (augmentation on the device).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vitcli.errors import UserError

FILE_SOURCES = ("miniplaces", "imagefolder", "imagenet")


def load_file_source(data_cfg: Any):
    """(splits keyed train/val[/test], class display names) from the files on disk."""
    if data_cfg.name == "miniplaces":
        from vitcli.data.miniplaces import load_miniplaces

        return load_miniplaces(data_cfg)
    from vitcli.data.imagefolder import load_imagefolder, load_imagenet

    return load_imagenet(data_cfg) if data_cfg.name == "imagenet" else load_imagefolder(data_cfg)


def subset(split: Any, idx: np.ndarray) -> Any:
    """Rows `idx` of an ArraySplit or FileSplit, lazily for memory-mapped images."""
    from vitcli.data.arrays import ArraySplit, take
    from vitcli.data.packed import IndexedRows

    if not isinstance(split, ArraySplit):
        return split.subset(idx)
    if isinstance(split.images, np.memmap) or getattr(split.images, "filename", None):
        return ArraySplit(IndexedRows(split.images, idx), split.labels[idx], [split.ids[i] for i in idx])
    return take(split, idx)


def carve_minival(splits: dict, fraction: float, seed: int) -> dict:
    """Move a stratified `fraction` of train into a `minival` split (ids keep their train/ prefix)."""
    if not fraction:
        return splits
    from vitcli.data.arrays import stratified_split

    if not 0.0 < fraction < 1.0:
        raise UserError(f"data.minival_fraction={fraction} must be between 0 and 1 (0 turns it off)")
    try:
        train_idx, mini_idx = stratified_split(splits["train"].labels, fraction, seed)
    except ValueError as err:
        raise UserError(f"data.minival_fraction={fraction} cannot carve a stratified minival "
                        f"from train: {err}") from err
    return {**splits, "train": subset(splits["train"], train_idx), "minival": subset(splits["train"], mini_idx)}


def create_file_data(cfg: Any, device: str, train: bool):
    from vitcli.data import DataModule

    data_cfg = cfg.data
    if data_cfg.format == "packed":
        from vitcli.data.packed import load_packed

        splits, names, manifest = load_packed(data_cfg)
        skipped = {f"skipped_files_{k}": v.get("skipped", 0) for k, v in manifest["splits"].items()}
        info: dict[str, Any] = {"data_format": "packed", "packed_size": manifest["size"], **skipped,
                                "skipped_files": sum(skipped.values())}
    elif data_cfg.format == "files":
        splits, names = load_file_source(data_cfg)
        info = {"data_format": "files", "skipped_files": 0}
    else:
        raise UserError(f"data.format={data_cfg.format} is not a format; use files or packed")
    if data_cfg.num_classes is not None and data_cfg.num_classes != len(names):
        raise UserError(f"data.num_classes={data_cfg.num_classes} but {data_cfg.root} has {len(names)} classes; "
                        "drop the override")
    splits = carve_minival(splits, data_cfg.minival_fraction, data_cfg.split_seed)
    make = array_loader if data_cfg.format == "packed" else file_loader
    loaders = {k: make(cfg, k, split, device, train, info) for k, split in splits.items()}
    info.update({f"{k}_samples": len(v) for k, v in splits.items()})
    return DataModule(data_cfg.name, len(names), names, loaders, info)


def array_loader(cfg: Any, key: str, split: Any, device: str, train: bool, info: dict):
    from vitcli.data.arrays import ArrayLoader
    from vitcli.data.batch_transforms import create_batch_augment

    d = cfg.data
    common = dict(img_size=d.img_size, mean=d.mean, std=d.std, device=device)
    if key == "train":
        return ArrayLoader(split, d.batch_size, shuffle=True, drop_last=len(split) > d.batch_size,
                           seed=cfg.trainer.seed, augment=create_batch_augment(cfg.augmentation) if train else None,
                           **common)
    return ArrayLoader(split, d.eval_batch_size or 2 * d.batch_size, **common)


def file_loader(cfg: Any, key: str, split: Any, device: str, train: bool, info: dict):
    from vitcli.data.files import BadFiles, FileLoader
    from vitcli.data.transforms import create_file_transform

    d = cfg.data
    is_train = key == "train"
    transform = create_file_transform(cfg.augmentation, d, train=is_train and train)
    bad = BadFiles(key, len(split), info, d.max_bad_fraction)
    bs = d.batch_size if is_train else d.eval_batch_size or 2 * d.batch_size
    return FileLoader(split, transform, bs, bad, shuffle=is_train, drop_last=is_train and len(split) > bs,
                      num_workers=d.num_workers, seed=cfg.trainer.seed, device=device)
