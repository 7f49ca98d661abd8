"""Per-sample transforms for image files, built by timm's create_transform.

The same augmentation config drives the batched tensor path
(`batch_transforms.py`) so that a preset means the same thing on both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from timm.data import create_transform
from timm.data.auto_augment import rand_augment_transform
from timm.data.random_erasing import RandomErasing
from timm.data.transforms import str_to_interp_mode
from torchvision import transforms as T

from vitcli.data.normalization import (
    crop_pct_of,
    dataset_defaults,
    interpolation_of,
    is_auto,
)

if TYPE_CHECKING:
    from vitcli.core.schema import AugmentationConfig, DataConfig


def create_file_transform(aug_cfg: AugmentationConfig, data_cfg: DataConfig, train: bool):
    """PIL image -> normalized float tensor (3, img_size, img_size)."""


    size = int(data_cfg.img_size)
    defaults = dataset_defaults(data_cfg.name)  # only where `auto` was never resolved (no trainer)
    mean = tuple(defaults[0] if is_auto(data_cfg.mean) else data_cfg.mean)
    std = tuple(defaults[1] if is_auto(data_cfg.std) else data_cfg.std)
    interpolation = interpolation_of(aug_cfg)
    if not train or aug_cfg is None:
        # crop_pct 1.0 (the default) resizes the whole image: right for 128 px scenes.
        return create_transform(size, is_training=False, interpolation=interpolation,
                                mean=mean, std=std, crop_pct=crop_pct_of(aug_cfg))
    if aug_cfg.scale:
        return create_transform(
            size, is_training=True, scale=tuple(aug_cfg.scale), ratio=tuple(aug_cfg.ratio), hflip=aug_cfg.hflip,
            vflip=0.0, color_jitter=aug_cfg.color_jitter, auto_augment=aug_cfg.auto_augment,
            interpolation=interpolation, mean=mean, std=std, re_prob=aug_cfg.re_prob,
            re_mode=aug_cfg.re_mode, re_count=aug_cfg.re_count,
        )
    # No random-resized crop: resize to img_size, then (optionally) RandomCrop with padding.

    ops: list[Any] = [T.Resize((size, size), interpolation=str_to_interp_mode(interpolation))]
    if aug_cfg.random_crop_padding:
        ops.append(T.RandomCrop(size, padding=int(aug_cfg.random_crop_padding)))
    if aug_cfg.hflip:
        ops.append(T.RandomHorizontalFlip(aug_cfg.hflip))
    if aug_cfg.color_jitter:
        cj = float(aug_cfg.color_jitter)
        ops.append(T.ColorJitter(cj, cj, cj))
    if aug_cfg.auto_augment:
        ops.append(rand_augment_transform(aug_cfg.auto_augment, dict(translate_const=int(size * 0.45),
                                                                     img_mean=tuple(round(255 * m) for m in mean))))
    ops += [T.ToTensor(), T.Normalize(mean, std)]
    if aug_cfg.re_prob:
        ops.append(RandomErasing(aug_cfg.re_prob, mode=aug_cfg.re_mode, max_count=aug_cfg.re_count, device="cpu"))
    return T.Compose(ops)
