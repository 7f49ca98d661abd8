"""Train-time augmentation, described once, and the per-image transforms of image files.

`train_stages` builds a preset's per-image pipeline with timm
(`transforms_imagenet_train(..., separate=True)`): crop and flip, then RandAugment or
colour jitter, then to-tensor, normalize and random erasing. Image files run those
stages per sample (`create_file_transform`); in-memory and packed arrays run the same
transform objects translated into batched ops (`batch_transforms.create_batch_augment`),
so both paths read the same settings and draw from the same distributions.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from timm.data import create_transform
from timm.data.transforms import str_to_interp_mode
from timm.data.transforms_factory import transforms_imagenet_train
from torchvision import transforms as T

from vitcli.data.normalization import (
    crop_pct_of,
    dataset_defaults,
    interpolation_of,
    is_auto,
)

if TYPE_CHECKING:
    from vitcli.core.schema import AugmentationConfig, DataConfig

log = logging.getLogger("vitcli")


def mean_std(data_cfg: DataConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """data.mean / data.std, or the dataset's defaults where `auto` was never resolved (no trainer)."""
    defaults = dataset_defaults(data_cfg.name)
    mean = defaults[0] if is_auto(data_cfg.mean) else data_cfg.mean
    std = defaults[1] if is_auto(data_cfg.std) else data_cfg.std
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def train_stages(aug_cfg: AugmentationConfig, data_cfg: DataConfig) -> tuple[list, list, list]:
    """A preset's per-image train transforms as timm's three stages: (crop and flip,
    RandAugment / colour jitter, to-tensor + normalize + random erasing).

    timm decides what it decides for any timm user: RandAugment's hparams (translate
    0.45 x img_size, fill = the dataset mean, the interpolation) and no colour jitter
    beside RandAugment (as in DeiT). Without `scale` the first stage is vitcli's own:
    resize to img_size, RandomCrop with zero padding, flip.

    Args:
        aug_cfg: the augmentation group (a preset plus overrides).
        data_cfg: the data group: img_size, mean and std.

    >>> from vitcli.core.schema import AugmentationConfig, DataConfig
    >>> aug = AugmentationConfig(name="shift_scale", scale=[0.75, 1.0], ratio=[0.85, 1.18])
    >>> geometry, colour, final = train_stages(aug, DataConfig(name="digits", mean=[0.5] * 3, std=[0.5] * 3))
    >>> [type(t).__name__ for t in geometry]
    ['RandomResizedCropAndInterpolation']
    """
    size = int(data_cfg.img_size)
    mean, std = mean_std(data_cfg)
    interpolation = interpolation_of(aug_cfg)
    if aug_cfg.color_jitter and aug_cfg.auto_augment and "3a" not in aug_cfg.auto_augment:
        log.warning(f"augmentation.color_jitter={aug_cfg.color_jitter} is not applied: with auto_augment="
                    f"{aug_cfg.auto_augment} timm (and DeiT) leave colour changes to RandAugment")
    stages = transforms_imagenet_train(
        size, scale=tuple(aug_cfg.scale) if aug_cfg.scale else None, ratio=tuple(aug_cfg.ratio),
        hflip=float(aug_cfg.hflip), vflip=0.0, color_jitter=aug_cfg.color_jitter or None,
        auto_augment=aug_cfg.auto_augment, interpolation=interpolation, mean=mean, std=std,
        re_prob=float(aug_cfg.re_prob), re_mode=str(aug_cfg.re_mode), re_count=int(aug_cfg.re_count), separate=True,
    )
    geometry, colour, final = (list(stage.transforms) for stage in stages)
    if not aug_cfg.scale:  # timm's first stage is always a RandomResizedCrop: replace it
        geometry = [T.Resize((size, size), interpolation=str_to_interp_mode(interpolation))]
        if aug_cfg.random_crop_padding:
            geometry.append(T.RandomCrop(size, padding=int(aug_cfg.random_crop_padding)))
        if aug_cfg.hflip:
            geometry.append(T.RandomHorizontalFlip(float(aug_cfg.hflip)))
    return geometry, colour, final


def create_file_transform(aug_cfg: AugmentationConfig | None, data_cfg: DataConfig,
                          train: bool) -> Callable[[Any], Any]:
    """PIL image -> normalized float tensor (3, img_size, img_size): `train_stages` for
    training, timm's eval transform (resize to img_size / crop_pct, centre crop) otherwise.

    Args:
        aug_cfg: the augmentation group (None: no augmentation group, eval only).
        data_cfg: the data group: img_size, mean and std.
        train: the train transform (augmented) or the eval one.

    >>> from PIL import Image
    >>> from vitcli.core.schema import AugmentationConfig, DataConfig
    >>> data = DataConfig(name="imagefolder", img_size=32, mean=[0.5] * 3, std=[0.5] * 3)
    >>> transform = create_file_transform(AugmentationConfig(scale=[0.75, 1.0]), data, train=True)
    >>> transform(Image.new("RGB", (40, 30))).shape
    torch.Size([3, 32, 32])
    """
    if train and aug_cfg is not None:
        geometry, colour, final = train_stages(aug_cfg, data_cfg)
        return T.Compose(geometry + colour + final)
    mean, std = mean_std(data_cfg)
    # crop_pct 1.0 (the default) resizes the whole image: right for 128 px scenes.
    return create_transform(int(data_cfg.img_size), is_training=False, interpolation=interpolation_of(aug_cfg),
                            mean=mean, std=std, crop_pct=crop_pct_of(aug_cfg))
