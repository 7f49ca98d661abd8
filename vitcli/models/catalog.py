"""The model presets (config group `model`) as rows of a table: the timm model behind each,
its parameter count, pretrained input size and kind. Models are built on the meta device,
so no weights are allocated or fetched."""

from __future__ import annotations

import fnmatch
from typing import Any

import torch

from vitcli.core.options import group_options, load_option
from vitcli.models.factory import build_timm_model


def model_kind(model: Any) -> str:
    """ViT-like (patch tokens: ViT, DeiT, Swin, Mixer, hybrids) or CNN."""
    tokens = hasattr(model, "patch_embed") or type(model).__name__ == "MlpMixer"
    return "ViT-like" if tokens else "CNN"


def preset_rows(pattern: str | None = None) -> list[dict[str, Any]]:
    """One row per preset whose name matches the glob `pattern` (all when None).

    >>> preset_rows("vit_pico")[0]["timm_name"]  # doctest: +SKIP
    'vit_tiny_patch16_224'
    """
    rows = []
    for name in group_options("model"):
        if pattern and not fnmatch.fnmatch(name, pattern):
            continue
        option = load_option("model", name)  # read as written: img_size may point at ${data.img_size}
        kwargs = dict(option.get("kwargs") or {})
        if option.get("patch_size"):
            kwargs["patch_size"] = option.patch_size
        with torch.device("meta"):
            model = build_timm_model(option.timm_name, kwargs)
        rows.append({"preset": name, "timm_name": option.timm_name,
                     "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
                     "input_size": model.pretrained_cfg.get("input_size", (3, 224, 224))[-1],
                     "kind": model_kind(model)})
    return rows
