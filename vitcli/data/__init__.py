"""Datasets and loaders: `create_data(cfg)` is the one entry point.

Sources that fit in memory (digits, synthetic, packed arrays) go through the
batched `ArrayLoader`; image files go through a torch DataLoader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vitcli.errors import UserError


@dataclass
class DataModule:
    """What the engine needs from a dataset: loaders per split and class info."""

    name: str
    num_classes: int
    class_names: list[str]
    loaders: dict[str, Any] = field(default_factory=dict)  # split -> loader
    info: dict[str, Any] = field(default_factory=dict)  # counts, skipped files, ...

    def ids(self, split: str) -> list[str]:
        """Sample ids of a split in the order its (unshuffled) loader yields them."""
        loader = self.loader(split)
        source = getattr(loader, "split", None) or getattr(loader, "dataset", None)
        return list(source.ids)

    def loader(self, split: str):
        if split not in self.loaders:
            raise UserError(f"split '{split}' is not available for data={self.name}; choose one of {sorted(self.loaders)}")
        return self.loaders[split]


def validate_data_cfg(data_cfg: Any) -> None:
    if data_cfg.img_size <= 0:
        raise UserError(f"data.img_size={data_cfg.img_size} must be a positive number of pixels (e.g. data.img_size=32)")
    if data_cfg.batch_size <= 0:
        raise UserError(f"data.batch_size={data_cfg.batch_size} must be positive")
    if not 0.0 < data_cfg.val_fraction < 1.0:
        raise UserError(f"data.val_fraction={data_cfg.val_fraction} must be between 0 and 1")
    if len(data_cfg.mean) != 3 or len(data_cfg.std) != 3:
        raise UserError("data.mean and data.std need three values each (RGB)")


def create_data(cfg: Any, device: str = "cpu", train: bool = True) -> DataModule:
    """Build the loaders for cfg.data with cfg.augmentation on the train split."""
    from vitcli.data.arrays import ArrayLoader, stratified_split, take
    from vitcli.data.batch_transforms import create_batch_augment
    from vitcli.data.sources import FILE_SOURCES, carve_minival, create_file_data

    data_cfg = cfg.data
    validate_data_cfg(data_cfg)
    name = data_cfg.name
    if name == "digits":
        from vitcli.data.digits import load_digits_split

        full, class_names = load_digits_split()
    elif name == "synthetic":
        from vitcli.data.synthetic import make_synthetic

        if not data_cfg.num_classes or data_cfg.num_classes < 2:
            raise UserError("data=synthetic needs data.num_classes >= 2")
        if data_cfg.num_samples < 2 * data_cfg.num_classes:
            raise UserError(f"data.num_samples={data_cfg.num_samples} is too small for {data_cfg.num_classes} classes")
        full, class_names = make_synthetic(
            data_cfg.num_samples, data_cfg.num_classes, data_cfg.native_size, seed=data_cfg.split_seed,
            difficulty=str(getattr(data_cfg, "difficulty", "hard")),
        )
    elif name in FILE_SOURCES:
        return create_file_data(cfg, device, train)
    else:
        raise UserError(f"data={name} is not a dataset; use digits, synthetic, {', '.join(FILE_SOURCES)}")

    try:
        train_idx, val_idx = stratified_split(full.labels, data_cfg.val_fraction, data_cfg.split_seed)
    except ValueError as err:  # sklearn: too few samples for a stratified split
        raise UserError(
            f"data={name}: cannot hold out data.val_fraction={data_cfg.val_fraction} of {len(full.labels)} samples "
            f"with every one of {len(class_names)} classes in both splits; use more samples or a larger val_fraction"
        ) from err
    splits = carve_minival({"train": take(full, train_idx), "val": take(full, val_idx)},
                           data_cfg.minival_fraction, data_cfg.split_seed)
    if data_cfg.num_classes is not None and data_cfg.num_classes != len(class_names):
        raise UserError(
            f"data.num_classes={data_cfg.num_classes} but data={name} has {len(class_names)} classes; drop the override"
        )
    eval_bs = data_cfg.eval_batch_size or 2 * data_cfg.batch_size
    common = dict(img_size=data_cfg.img_size, mean=data_cfg.mean, std=data_cfg.std, device=device)
    loaders = {
        "train": ArrayLoader(
            splits["train"], data_cfg.batch_size, shuffle=True, drop_last=len(splits["train"]) > data_cfg.batch_size,
            augment=create_batch_augment(cfg.augmentation) if train else None, seed=cfg.trainer.seed, **common,
        ),
        "val": ArrayLoader(splits["val"], eval_bs, **common),
    }
    if "minival" in splits:
        loaders["minival"] = ArrayLoader(splits["minival"], eval_bs, **common)
    info = {f"{k}_samples": len(v) for k, v in splits.items()}
    return DataModule(name, len(class_names), class_names, loaders, info)
