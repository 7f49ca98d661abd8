"""Where a model looks: attention rollout, last-layer CLS attention and Grad-CAM maps.

- ViT family (timm VisionTransformer and its subclasses: vit, deit incl. the distilled
  token, dinov2 with register tokens, clip, the hybrid ResNet-ViT): attention
  probabilities are read with timm's `AttentionExtract`, with fused attention switched
  off only while extracting (scaled_dot_product_attention never materialises them).
  `rollout` follows Abnar & Zuidema (2020), "Quantifying Attention Flow in Transformers".
- Every model (Swin, Mixer, CNNs, and ViTs on request): Grad-CAM from the `grad-cam`
  package at the last feature layer, with the reshape its token layout needs.

Every map comes back as a float32 array (B, H, W) at the input's size, scaled to [0, 1].
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from timm.utils import AttentionExtract

from vitcli.core.errors import UserError, install_hint

ATTENTION_METHODS = ("rollout", "attention")


def is_attention_model(model) -> bool:
    """True for models whose global self-attention over patch tokens rollout can read."""
    return isinstance(model, VisionTransformer)


def resolve_method(model, method: str, model_name: str = "this model") -> str:
    """auto -> rollout for the ViT family, gradcam otherwise; an impossible pair is a UserError."""
    if method == "auto":
        return "rollout" if is_attention_model(model) else "gradcam"
    if method in ATTENTION_METHODS and not is_attention_model(model):
        raise UserError(f"method={method} needs a ViT-family model with global self-attention; {model_name} "
                        f"({type(model).__name__}) has none: use method=gradcam (or method=auto)")
    return method


@contextlib.contextmanager
def fused_attention_off(model) -> Iterator[None]:
    """Make every attention module compute explicit softmax probabilities; restore after."""
    saved = [(m, m.fused_attn) for m in model.modules() if hasattr(m, "fused_attn")]
    try:
        for m, _ in saved:
            m.fused_attn = False
        yield
    finally:
        for m, value in saved:
            m.fused_attn = value


@torch.no_grad()
def attention_probs(model, x: torch.Tensor) -> list[torch.Tensor]:
    """Per block, the attention probabilities (B, heads, N, N), first block first."""
    with fused_attention_off(model):
        # the Dropout after the softmax sees the probabilities (identity in eval mode)
        extract = AttentionExtract(model, names=["*attn.attn_drop"], method="hook")
        try:
            out = extract(x)
        finally:
            for handle in extract.hooks._handles:
                handle.remove()
    return [out[name].float() for name in extract.names]


def rollout(attns: list[torch.Tensor]) -> torch.Tensor:
    """Attention rollout (B, N, N): heads averaged, each layer 0.5 A + 0.5 I (the residual),
    rows renormalised, then multiplied from the first layer up: R = Â_L ... Â_1."""
    result = None
    for attn in attns:
        a = attn.mean(dim=1)
        a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
        a = a / a.sum(dim=-1, keepdim=True)
        result = a if result is None else a @ result
    return result


def token_grid(model, n_tokens: int) -> tuple[int, int]:
    """(rows, cols) of the patch-token grid of `n_tokens` tokens."""
    embed = getattr(model, "patch_embed", None) or getattr(model, "stem", None)
    grid = tuple(getattr(embed, "grid_size", ()) or ())
    if len(grid) == 2 and grid[0] * grid[1] == n_tokens:
        return int(grid[0]), int(grid[1])
    side = math.isqrt(n_tokens)
    if side * side != n_tokens:
        raise ValueError(f"cannot lay {n_tokens} tokens out on a square grid")
    return side, side


def _cls_row(mat: torch.Tensor, model) -> torch.Tensor:
    """What the class token (or, without one, the average token) draws from each patch: (B, patches)."""
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    if getattr(model, "cls_token", None) is not None:
        return mat[:, 0, prefix:]
    return mat[:, prefix:, prefix:].mean(dim=1)


def to_image_size(maps: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(B, h, w) -> (B, H, W) bilinearly upsampled, each map min-max scaled to [0, 1]."""
    up = F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    flat = up.flatten(1)
    lo, hi = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    scaled = (flat - lo) / (hi - lo).clamp_min(1e-12)
    return scaled.view_as(up).cpu().numpy().astype(np.float32)


def attention_map(model, x: torch.Tensor, method: str) -> np.ndarray:
    """rollout | attention (last layer, heads averaged) maps of the class token, (B, H, W)."""
    attns = attention_probs(model, x)
    mat = rollout(attns) if method == "rollout" else attns[-1].mean(dim=1)
    row = _cls_row(mat, model)
    gh, gw = token_grid(model, row.shape[1])
    return to_image_size(row.reshape(-1, gh, gw), tuple(x.shape[-2:]))


def gradcam_target(model) -> tuple[torch.nn.Module, str]:
    """The layer Grad-CAM reads and its layout: tokens (B, N, C), nhwc or nchw."""
    if is_attention_model(model):
        return model.blocks[-1].norm1, "tokens"  # the usual ViT choice (pytorch-grad-cam's tutorial)
    if getattr(model, "output_fmt", "NCHW") == "NHWC":  # Swin: (B, H, W, C) features
        return model.norm, "nhwc"
    if hasattr(model, "stem") and hasattr(model, "blocks") and hasattr(model, "norm"):  # MLP-Mixer
        return model.norm, "tokens"
    info = getattr(model, "feature_info", None)
    if info:  # timm CNNs: the last feature stage
        entry = info[-1] if isinstance(info, list) else info.get_dicts()[-1]
        return model.get_submodule(entry["module"]), "nchw"
    raise UserError(f"no Grad-CAM target layer known for {type(model).__name__}")


def _reshape(model, layout: str):
    def tokens(t: torch.Tensor) -> torch.Tensor:
        t = t[:, int(getattr(model, "num_prefix_tokens", 0)):]
        gh, gw = token_grid(model, t.shape[1])
        return t.reshape(t.shape[0], gh, gw, t.shape[2]).permute(0, 3, 1, 2)

    return {"tokens": tokens, "nhwc": lambda t: t.permute(0, 3, 1, 2), "nchw": None}[layout]


def gradcam_map(model, x: torch.Tensor, classes: list[int]) -> np.ndarray:
    """Grad-CAM of `classes` (one per image) through the pytorch-grad-cam package, (B, H, W)."""
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as err:
        raise UserError(f"Grad-CAM needs the grad-cam package: {install_hint('explain')}") from err

    layer, layout = gradcam_target(model)
    with GradCAM(model=model, target_layers=[layer], reshape_transform=_reshape(model, layout)) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes])
    return np.nan_to_num(np.asarray(maps, dtype=np.float32))


def explain_maps(model, x: torch.Tensor, method: str, classes: list[int]) -> np.ndarray:
    """Maps (B, H, W) in [0, 1] for a resolved method; Grad-CAM explains `classes`."""
    if method in ATTENTION_METHODS:
        return attention_map(model, x, method)
    return gradcam_map(model, x, classes)
