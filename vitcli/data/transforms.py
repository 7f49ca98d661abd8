"""Per-sample transforms for image files, built by timm's create_transform.

The same augmentation config drives the batched tensor path
(`batch_transforms.py`) so that a preset means the same thing on both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vitcli.config import AugmentationConfig, DataConfig


def create_file_transform(aug_cfg: AugmentationConfig, data_cfg: DataConfig, train: bool):
    """PIL image -> normalized float tensor (3, img_size, img_size)."""
    from timm.data import create_transform
    from torchvision import transforms as T

    size = int(data_cfg.img_size)
    mean, std = tuple(data_cfg.mean), tuple(data_cfg.std)
    if not train or aug_cfg is None:
        # Resize the whole image (crop_pct 1.0 keeps everything, right for 128 px scenes).
        return create_transform(size, is_training=False, interpolation=aug_cfg.interpolation if aug_cfg else "bicubic",
                                mean=mean, std=std, crop_pct=aug_cfg.crop_pct if aug_cfg else 1.0)
    if aug_cfg.scale:
        return create_transform(
            size, is_training=True, scale=tuple(aug_cfg.scale), ratio=tuple(aug_cfg.ratio), hflip=aug_cfg.hflip,
            vflip=0.0, color_jitter=aug_cfg.color_jitter, auto_augment=aug_cfg.auto_augment,
            interpolation=aug_cfg.interpolation, mean=mean, std=std, re_prob=aug_cfg.re_prob,
            re_mode=aug_cfg.re_mode, re_count=aug_cfg.re_count,
        )
    # No random-resized crop: resize to img_size, then (optionally) RandomCrop with padding.
    from timm.data.auto_augment import rand_augment_transform
    from timm.data.random_erasing import RandomErasing
    from timm.data.transforms import str_to_interp_mode

    ops: list[Any] = [T.Resize((size, size), interpolation=str_to_interp_mode(aug_cfg.interpolation))]
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
