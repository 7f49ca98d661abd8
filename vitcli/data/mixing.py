"""Batch-level mixing in the train loop: timm's Mixup/CutMix and Gaussian noise."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from timm.data import Mixup

if TYPE_CHECKING:
    from vitcli.core.schema import AugmentationConfig


def create_mixup(aug_cfg: AugmentationConfig, label_smoothing: float, num_classes: int):
    """timm Mixup (MixUp and/or CutMix) or None. It smooths its soft targets itself,
    so the label loss must not smooth again."""
    if not (aug_cfg.mixup_alpha > 0 or aug_cfg.cutmix_alpha > 0 or aug_cfg.cutmix_minmax):
        return None

    return Mixup(
        mixup_alpha=aug_cfg.mixup_alpha, cutmix_alpha=aug_cfg.cutmix_alpha,
        cutmix_minmax=list(aug_cfg.cutmix_minmax) if aug_cfg.cutmix_minmax else None,
        prob=aug_cfg.mixup_prob, switch_prob=aug_cfg.mixup_switch_prob, mode=aug_cfg.mixup_mode,
        label_smoothing=label_smoothing, num_classes=num_classes,
    )


def add_gaussian_noise(x: torch.Tensor, std: float) -> torch.Tensor:
    """Additive noise on the normalized batch (the 'noise perturbation' of leaderboard #5)."""
    return x + torch.randn_like(x) * std


def mix_batch(x: torch.Tensor, y: torch.Tensor, mixup: Any, aug_cfg: AugmentationConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """What the train step does to a loader batch before the model sees it: MixUp/CutMix (when
    enabled) and Gaussian noise. `vitcli preview` draws exactly this."""
    if mixup is not None and mixup.mixup_enabled:
        x, y = mixup(x, y)
    if aug_cfg.gaussian_noise:
        x = add_gaussian_noise(x, aug_cfg.gaussian_noise)
    return x, y
