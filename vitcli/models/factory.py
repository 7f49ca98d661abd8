"""Model factory: a model preset (config group `model`) -> a timm model.

Everything is built by `timm.create_model`; vitcli only decides the arguments:
the data's class count, the input/patch size for small images, the
regularization rates, pretrained or local weights, and an optional MLP head.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import timm
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf
from timm.models import MlpMixer, build_model_with_cfg
from timm.models.mlp_mixer import checkpoint_filter_fn

from vitcli.core.errors import UserError
from vitcli.models.weights import load_weights

if TYPE_CHECKING:
    from vitcli.core.schema import ModelConfig, RegularizationConfig

log = logging.getLogger(__name__)

# timm's MLP-Mixer entrypoints fix patch_size inside the entrypoint, so a patch
# override must go through the variant builder with the same architecture args.
_MIXER_ARCH = {
    "mixer_s16_224": dict(num_blocks=8, embed_dim=512),
    "mixer_s32_224": dict(num_blocks=8, embed_dim=512),
    "mixer_b16_224": dict(num_blocks=12, embed_dim=768),
    "mixer_b32_224": dict(num_blocks=12, embed_dim=768),
    "mixer_l16_224": dict(num_blocks=24, embed_dim=1024),
}


def timm_kwargs(model_cfg: ModelConfig, num_classes: int, reg_cfg: RegularizationConfig | None = None) -> dict[str, Any]:
    """The keyword arguments vitcli passes to timm.create_model for a preset."""
    extra = model_cfg.kwargs or {}
    # plain lists/dicts: timm passes some (e.g. swin depths) to torch ops that reject ListConfig
    kwargs: dict[str, Any] = dict(OmegaConf.to_container(extra, resolve=True) if isinstance(extra, DictConfig) else extra)
    kwargs["num_classes"] = num_classes
    drop_path = model_cfg.drop_path_rate
    drop = model_cfg.drop_rate
    if reg_cfg is not None:
        drop_path = reg_cfg.drop_path_rate if drop_path is None else drop_path
        drop = reg_cfg.drop_rate if drop is None else drop
    if drop_path:
        kwargs["drop_path_rate"] = float(drop_path)
    if drop:
        kwargs["drop_rate"] = float(drop)
    if model_cfg.img_size is not None:
        kwargs["img_size"] = int(model_cfg.img_size)
    if model_cfg.patch_size is not None:
        kwargs["patch_size"] = int(model_cfg.patch_size)
    return kwargs


def create_model(model_cfg: ModelConfig, num_classes: int, reg_cfg: RegularizationConfig | None = None,
                 seed: int | None = None):
    """Build the preset's timm model with `num_classes` outputs.

    With model.peft=lora the model comes wrapped by peft (models/lora.py) and is built from `seed`
    (the run's trainer.seed), so that its frozen base can be rebuilt exactly from the config.
    """
    if str(getattr(model_cfg, "peft", "none")) == "lora":
        from vitcli.core.rng import seeded
        from vitcli.models.lora import apply_lora

        with seeded(0 if seed is None else int(seed)):
            model = _create_timm(model_cfg, num_classes, reg_cfg)
            return apply_lora(model, model_cfg.lora, model_cfg.name, classifier_names(model))
    return _create_timm(model_cfg, num_classes, reg_cfg)


def _create_timm(model_cfg: ModelConfig, num_classes: int, reg_cfg: RegularizationConfig | None = None):
    name = model_cfg.timm_name
    arch = name.split(".")[0]
    if not timm.is_model(arch):
        raise UserError(
            f"model.timm_name='{name}' is not a timm model; pick a preset with "
            "`vitcli models` or a name from timm.list_models()"
        )
    kwargs = timm_kwargs(model_cfg, num_classes, reg_cfg)
    if model_cfg.pretrained and not model_cfg.weights:
        kwargs["pretrained"] = True
    try:
        model = build_timm_model(name, kwargs)
    except TypeError as err:
        raise UserError(f"model={model_cfg.name} ({name}) rejected an argument: {err}") from err
    except (RuntimeError, OSError, ValueError) as err:
        if kwargs.get("pretrained"):
            raise UserError(
                f"could not load the timm hub weights of {name}: {str(err).splitlines()[0]} "
                "(check the network or HF cache; model.pretrained=false trains from scratch)"
            ) from err
        raise UserError(f"model={model_cfg.name} ({name}) could not be built: {str(err).splitlines()[0]}") from err
    check_input_size(model)
    if model_cfg.weights:
        load_weights(model, Path(model_cfg.weights).expanduser(), "model.weights", name, classifier_names(model),
                     strict=getattr(model_cfg, "weights_strict", True), strict_setting="model.weights_strict")
    if model_cfg.head == "mlp":
        attach_mlp_head(model, num_classes, model_cfg.head_hidden_dim, kwargs.get("drop_rate", 0.0))
    return model


def check_input_size(model) -> None:
    """The input side must be a multiple of the patch size, else timm's patch conv silently
    drops the border pixels (a cropped grid). Models that pad dynamically are exempt."""
    for attr in ("patch_embed", "stem"):
        embed = getattr(model, attr, None)
        img, patch = getattr(embed, "img_size", None), getattr(embed, "patch_size", None)
        if embed is None or img is None or patch is None or getattr(embed, "dynamic_img_pad", False):
            continue
        for side, step in zip(img, patch):
            if side % step:
                lower, upper = side - side % step, side - side % step + step
                nearest = f"{lower} or {upper}" if lower > 0 else f"{upper}"
                raise UserError(
                    f"input size {side} (data.img_size / model.img_size) is not a multiple of the patch size "
                    f"{step} (model.patch_size): the model would crop the image; use data.img_size={nearest}, "
                    "or a patch size that divides it"
                )
        return


def build_timm_model(name: str, kwargs: dict[str, Any]):
    """timm.create_model(name, **kwargs); MLP-Mixer entrypoints fix patch_size themselves, so a
    patch override builds the same architecture through timm's public build_model_with_cfg."""

    arch = name.split(".")[0]
    if arch in _MIXER_ARCH and "patch_size" in kwargs:
        pretrained = kwargs.pop("pretrained", False)
        return build_model_with_cfg(MlpMixer, name, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                    feature_cfg=dict(out_indices=3, feature_cls="getter"),
                                    **{**_MIXER_ARCH[arch], **kwargs})
    return timm.create_model(name, **kwargs)


def classifier_names(model) -> list[str]:
    """Dotted names of the model's classifier modules (timm's pretrained_cfg;
    DeiT distilled models have two: head and head_dist)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("classifier", "head")
    return list(name) if isinstance(name, (list, tuple)) else [name]


def classifier_name(model) -> str:
    return classifier_names(model)[0]


def head_parameter_names(model) -> set[str]:
    """Names of the parameters that belong to the classifier(s) (with LoRA: peft's trained copy)."""
    if hasattr(model, "peft_config"):
        return {n for n, _ in model.named_parameters() if ".modules_to_save." in n}
    prefixes = tuple(f"{n}." for n in classifier_names(model))
    return {n for n, _ in model.named_parameters() if n.startswith(prefixes)}


def set_backbone_trainable(model, trainable: bool) -> None:
    """Freeze or unfreeze everything but the classifier. Frozen parameters get no
    gradient, so the optimizer skips them (no update, no weight decay) and its
    state for them starts fresh when they unfreeze. A LoRA model's base stays frozen
    whatever `trainable` says: here only its adapters are frozen or unfrozen."""
    head = head_parameter_names(model)
    lora = hasattr(model, "peft_config")
    for name, param in model.named_parameters():
        if name not in head and (not lora or ".lora_" in name):
            param.requires_grad_(trainable)


def set_train_mode(model) -> None:
    """model.train(), except a LoRA model's frozen BatchNorm layers, which keep their (pretrained)
    running statistics: no adapter checkpoint carries statistics drifted in training (models/lora.py)."""
    model.train()
    if hasattr(model, "peft_config"):
        from vitcli.models.lora import freeze_norm_statistics

        freeze_norm_statistics(model)


def attach_mlp_head(model, num_classes: int, hidden_dim: int | None, drop_rate: float = 0.0) -> None:
    """Replace the linear classifier with Linear -> GELU -> Dropout -> Linear."""
    name = classifier_name(model)
    old = model.get_submodule(name)
    if not isinstance(old, nn.Linear):
        raise UserError(f"model.head=mlp needs a linear classifier at '{name}', found {type(old).__name__}")
    hidden = hidden_dim or old.in_features
    head = nn.Sequential(
        nn.Linear(old.in_features, hidden), nn.GELU(), nn.Dropout(drop_rate), nn.Linear(hidden, num_classes)
    )
    model.set_submodule(name, head)


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def enable_grad_checkpointing(model, preset: str) -> None:
    """trainer.grad_checkpointing=true: timm's set_grad_checkpointing() (blocks recompute their
    activations in backward: less memory, ~30% more compute). Models without it stop the run.

    Non-reentrant checkpointing, explicitly: the reentrant kind (TIMM_REENTRANT_CKPT=1, and every
    timm before 1.0.13, which pyproject.toml no longer admits) gives no gradient to the parameters
    inside a block whose input needs none, which under LoRA (frozen patch embedding) are the adapters."""
    from timm.layers import set_reentrant_ckpt

    setter = getattr(model, "set_grad_checkpointing", None)
    try:
        if setter is None:
            raise AssertionError
        setter(True)
    except (AssertionError, NotImplementedError) as err:
        raise UserError(f"trainer.grad_checkpointing=true: model={preset} ({type(model).__name__}) does not support "
                        "gradient checkpointing in timm; set trainer.grad_checkpointing=false") from err
    set_reentrant_ckpt(False)
