"""Preprocessing that follows the weights: `data.mean`, `data.std`,
`augmentation.interpolation` and `augmentation.crop_pct` (eval) default to `auto`.

With `model.pretrained=true` or `model.weights=FILE`, auto means what the weights
were trained with, read from the timm model's pretrained config by
`timm.data.resolve_model_data_config` (CLIP and DINOv2 differ from ImageNet's).
Otherwise auto means the dataset's default (bicubic, crop_pct 1.0: the whole image). The trainer resolves the values once,
before anything is built, so the run's config.yaml records the numbers that
eval, predict, export and distillation teachers then reuse.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import timm
import torch
from timm.data import resolve_model_data_config

log = logging.getLogger("vitcli")

AUTO = "auto"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Photos use ImageNet's statistics; the small generated sets were made around 0.5.
DATASET_DEFAULTS: dict[str, tuple[Sequence[float], Sequence[float]]] = {
    "imagefolder": (IMAGENET_MEAN, IMAGENET_STD),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "miniplaces": (IMAGENET_MEAN, IMAGENET_STD),
    "wds": (IMAGENET_MEAN, IMAGENET_STD),
    "hf": (IMAGENET_MEAN, IMAGENET_STD),
}
FALLBACK = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
DEFAULT_INTERPOLATION = "bicubic"
DEFAULT_CROP_PCT = 1.0  # small scene images: keep everything


def is_auto(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.lower() == AUTO)


def dataset_defaults(name: str) -> tuple[list[float], list[float]]:
    mean, std = DATASET_DEFAULTS.get(name, FALLBACK)
    return list(mean), list(std)


def interpolation_of(aug_cfg: Any) -> str:
    """augmentation.interpolation, with an unresolved auto read as the default."""
    value = aug_cfg.interpolation if aug_cfg is not None else None
    return DEFAULT_INTERPOLATION if is_auto(value) else str(value)


def crop_pct_of(aug_cfg: Any) -> float:
    value = aug_cfg.crop_pct if aug_cfg is not None else None
    return DEFAULT_CROP_PCT if is_auto(value) else float(value)


def fill_dataset_defaults(cfg: Any) -> None:
    """Replace an unresolved `auto` by the dataset's default (no model involved)."""
    data_cfg = cfg.data
    mean, std = dataset_defaults(data_cfg.name)
    if is_auto(data_cfg.mean):
        data_cfg.mean = mean
    if is_auto(data_cfg.std):
        data_cfg.std = std
    aug = cfg.get("augmentation") if hasattr(cfg, "get") else getattr(cfg, "augmentation", None)
    if aug is not None:
        if is_auto(aug.interpolation):
            aug.interpolation = DEFAULT_INTERPOLATION
        if is_auto(aug.crop_pct):
            aug.crop_pct = DEFAULT_CROP_PCT


def weights_data_config(model_cfg: Any) -> dict[str, Any] | None:
    """timm's data config (mean, std, crop_pct, interpolation, ...) of the weights the
    preset loads, or None when it trains from scratch. The model is built on the meta
    device: only its pretrained config is read, no weights are allocated or fetched."""
    if not (model_cfg.pretrained or model_cfg.weights):
        return None

    name = str(model_cfg.timm_name)
    if not timm.is_model(name.split(".")[0]):
        return None  # create_model reports the bad name with its own message
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    return resolve_model_data_config(model)


def resolve_normalization(cfg: Any) -> None:
    """Resolve the `auto` values in place (see the module docstring); warn once when an
    explicit data.mean/data.std differs from the statistics of the weights."""
    data_cfg = cfg.data
    own = weights_data_config(cfg.model)
    defaults = dataset_defaults(data_cfg.name)
    differs = []
    for i, key in enumerate(("mean", "std")):
        wanted = [float(v) for v in own[key]] if own else None
        value = data_cfg[key]
        if is_auto(value):
            data_cfg[key] = wanted or defaults[i]
        elif wanted and any(abs(float(a) - b) > 1e-4 for a, b in zip(value, wanted)):
            differs.append(f"data.{key}={list(value)} (the weights use {[round(v, 4) for v in wanted]})")
    aug = cfg.augmentation
    if is_auto(aug.interpolation):
        aug.interpolation = str(own["interpolation"]) if own else DEFAULT_INTERPOLATION
    if is_auto(aug.crop_pct):
        aug.crop_pct = float(own["crop_pct"]) if own else DEFAULT_CROP_PCT
    if differs:
        log.warning(f"{' and '.join(differs)}: model={cfg.model.name} was pretrained with other statistics; "
                    "leave data.mean/data.std at auto to use the weights' own")
