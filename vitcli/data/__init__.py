"""Datasets and loaders: `create_data(cfg)` is the one entry point.

Sources (sources/) that fit in memory (digits, synthetic) and packed arrays (pack.py) go
through the batched `ArrayLoader` (arrays.py, augmentation as batch ops on the device);
image files go through `FileLoader` (files.py, timm transforms per sample in workers).

May import: vitcli.core.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vitcli.core.errors import UserError
from vitcli.data.arrays import stratified_split, take
from vitcli.data.balance import class_counts
from vitcli.data.loaders import array_loader
from vitcli.data.module import DataModule, check_num_classes, validate_data_cfg
from vitcli.data.normalization import fill_dataset_defaults
from vitcli.data.sources import FILE_SOURCES, carve_minival, create_file_data
from vitcli.data.sources.digits import load_digits_split
from vitcli.data.sources.synthetic import make_synthetic

if TYPE_CHECKING:
    from vitcli.core.schema import TrainConfig

__all__ = ["DataModule", "create_data"]

ARRAY_SOURCES = ("digits", "synthetic")


def load_array_source(data_cfg) -> tuple[dict, list[str]]:
    """digits / synthetic: the in-memory ArraySplits (train, val by data.val_fraction) and class names."""
    name = data_cfg.name
    if name == "digits":
        full, class_names = load_digits_split()
    else:
        if not data_cfg.num_classes or data_cfg.num_classes < 2:
            raise UserError("data=synthetic needs data.num_classes >= 2")
        if data_cfg.num_samples < 2 * data_cfg.num_classes:
            raise UserError(f"data.num_samples={data_cfg.num_samples} is too small for {data_cfg.num_classes} classes")
        full, class_names = make_synthetic(
            data_cfg.num_samples, data_cfg.num_classes, data_cfg.native_size, seed=data_cfg.split_seed,
            difficulty=str(getattr(data_cfg, "difficulty", "hard")),
        )
    try:
        train_idx, val_idx = stratified_split(full.labels, data_cfg.val_fraction, data_cfg.split_seed)
    except ValueError as err:  # sklearn: too few samples for a stratified split
        raise UserError(
            f"data={name}: cannot hold out data.val_fraction={data_cfg.val_fraction} of {len(full.labels)} samples "
            f"with every one of {len(class_names)} classes in both splits; use more samples or a larger val_fraction"
        ) from err
    return {"train": take(full, train_idx), "val": take(full, val_idx)}, class_names


def create_data(cfg: TrainConfig, device: str = "cpu", train: bool = True) -> DataModule:
    """Build the loaders for cfg.data with cfg.augmentation on the train split."""
    data_cfg = cfg.data
    fill_dataset_defaults(cfg)  # `auto` left unresolved (no trainer): the dataset's default
    validate_data_cfg(data_cfg)
    name = data_cfg.name
    if name in FILE_SOURCES:
        return with_class_counts(create_file_data(cfg, device, train))
    if name not in ARRAY_SOURCES:
        raise UserError(f"data={name} is not a dataset; use {', '.join(ARRAY_SOURCES + FILE_SOURCES)}")
    splits, class_names = load_array_source(data_cfg)
    splits = carve_minival(splits, data_cfg.minival_fraction, data_cfg.split_seed)
    check_num_classes(data_cfg, len(class_names), f"data={name}")
    loaders = {k: array_loader(cfg, k, split, device, train) for k, split in splits.items()}
    info = {"data_format": "memory", **{f"{k}_samples": len(v) for k, v in splits.items()}}  # arrays: already in memory
    return with_class_counts(DataModule(name, len(class_names), class_names, loaders, info))


def with_class_counts(data: DataModule) -> DataModule:
    """Record the train split's samples per class (None for a stream, whose labels are not known up front)."""
    labels = getattr(data.loaders["train"].split, "labels", None)
    data.class_counts = None if labels is None else class_counts(labels, data.num_classes)
    return data
