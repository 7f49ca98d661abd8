"""One loader per split: in-memory and packed arrays go through the batched `ArrayLoader`
(augmentation as batch ops on the device), image files through `FileLoader` (timm
transforms per sample in worker processes). Both follow the rules in data/module.py."""

from __future__ import annotations

from typing import Any

from vitcli.data.arrays import ArrayLoader
from vitcli.data.batch_transforms import create_batch_augment
from vitcli.data.files import BadFiles, FileLoader
from vitcli.data.module import eval_batch_size, train_drop_last
from vitcli.data.transforms import create_file_transform


def array_loader(cfg: Any, split_name: str, split: Any, device: str, train: bool):
    """ArrayLoader for one split: shuffled and augmented for train (when `train`), in order otherwise."""
    d = cfg.data
    common = dict(img_size=d.img_size, mean=d.mean, std=d.std, device=device)
    if split_name == "train":
        loader = ArrayLoader(split, d.batch_size, shuffle=True, drop_last=train_drop_last(len(split), d.batch_size),
                             seed=cfg.trainer.seed, augment=create_batch_augment(cfg.augmentation, d) if train else None,
                             **common)
        return balanced(loader, d, train)
    return ArrayLoader(split, eval_batch_size(d), **common)


def balanced(loader: Any, data_cfg: Any, train: bool) -> Any:
    """The train loader, drawing classes evenly when data.class_balance=sampler."""
    if train and str(data_cfg.class_balance) == "sampler":
        loader.balance(loader.split.labels)
    return loader


def file_loader(cfg: Any, split_name: str, split: Any, device: str, train: bool, info: dict):
    """FileLoader for one split; unreadable files are counted into `info` (skipped_files_<split>)."""
    d = cfg.data
    is_train = split_name == "train"
    transform = create_file_transform(cfg.augmentation, d, train=is_train and train)
    bad = BadFiles(split_name, len(split), info, d.max_bad_fraction)
    bs = d.batch_size if is_train else eval_batch_size(d)
    loader = FileLoader(split, transform, bs, bad, shuffle=is_train,
                        drop_last=is_train and train_drop_last(len(split), bs), num_workers=d.num_workers,
                        seed=cfg.trainer.seed, device=device)
    return balanced(loader, d, train) if is_train else loader
