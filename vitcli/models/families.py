"""What vitcli knows about each timm model family, as data: which modules LoRA adapts by
default and how frozen-feature probes read tokens from the last blocks.

A family is matched on the class of the built model (or any base class), so every timm
name that builds a VisionTransformer (ViT, DeiT, DINOv2, CLIP, hybrids) shares one record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

# timm ViT, DeiT, DINOv2, CLIP and Swin blocks share these module names (attention and MLP);
# a target matches a module whose dotted name ends with it, so `attn.proj` leaves the
# patch embedding's `patch_embed.proj` convolution alone.
_ATTN_MLP = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


@dataclass(frozen=True)
class Family:
    name: str
    classes: tuple[str, ...]  # timm model classes (matched against the model's class and its bases)
    lora_targets: Optional[tuple[str, ...]]  # module-name suffixes adapted by default (None: no default)
    tokens: str  # probe token layout of forward_intermediates: "prefix" (class token + patches), "map" (NCHW), "none"


FAMILIES = (
    Family("vit", ("VisionTransformer", "Eva"), _ATTN_MLP, "prefix"),
    Family("swin", ("SwinTransformer", "SwinTransformerV2"), _ATTN_MLP, "map"),
    Family("mixer", ("MlpMixer",), ("mlp_tokens.fc1", "mlp_tokens.fc2", "mlp_channels.fc1", "mlp_channels.fc2"),
           "map"),
)


def model_family(model) -> Optional[Family]:
    """The family record of a built timm model, or None for families vitcli has no defaults for.

    >>> import timm
    >>> model_family(timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8)).name
    'vit'
    >>> model_family(timm.create_model("resnet18")) is None
    True
    """
    bases = {cls.__name__ for cls in type(model).__mro__}
    return next((family for family in FAMILIES if bases & set(family.classes)), None)
