"""What the engine needs from a dataset (a DataModule), and the loader rules every source shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vitcli.core.errors import UserError


@dataclass
class DataModule:
    """What the engine needs from a dataset: loaders per split and class info."""

    name: str
    num_classes: int
    class_names: list[str]
    loaders: dict[str, Any] = field(default_factory=dict)  # split -> loader
    info: dict[str, Any] = field(default_factory=dict)  # counts, skipped files, ...
    class_counts: Any = None  # (num_classes,) int64 train samples per class (None: a stream)

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


def eval_batch_size(data_cfg: Any) -> int:
    """Evaluation batch: data.eval_batch_size, else twice the training batch (no gradients to keep)."""
    return data_cfg.eval_batch_size or 2 * data_cfg.batch_size


def train_drop_last(num_samples: int, batch_size: int) -> bool:
    """Drop a ragged last training batch, unless the split is smaller than one batch."""
    return num_samples > batch_size


def check_num_classes(data_cfg: Any, found: int, where: str) -> None:
    if data_cfg.num_classes is not None and data_cfg.num_classes != found:
        raise UserError(f"data.num_classes={data_cfg.num_classes} but {where} has {found} classes; drop the override")
