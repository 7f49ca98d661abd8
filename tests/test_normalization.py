"""data.mean/data.std=auto follow the weights (timm's pretrained config), else the dataset default."""

from __future__ import annotations

import logging

import pytest
from omegaconf import OmegaConf

from vitcli.data.normalization import IMAGENET_MEAN, IMAGENET_STD, resolve_normalization

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
TINY_VIT = ["+model.kwargs.depth=1", "+model.kwargs.embed_dim=32", "+model.kwargs.num_heads=2"]


def write_weights(path, timm_name: str, num_classes: int = 10, **kwargs) -> str:
    """A random-init state dict of the (shrunken) architecture: no network."""
    import timm
    import torch

    model = timm.create_model(timm_name.split(".")[0], num_classes=num_classes, **kwargs)
    torch.save(model.state_dict(), path)
    return str(path)


def test_auto_from_scratch_is_the_dataset_default(compose):
    cfg = compose("train", ["data=synthetic"])
    resolve_normalization(cfg)
    assert list(cfg.data.mean) == [0.5] * 3
    assert cfg.augmentation.crop_pct == 1.0 and cfg.augmentation.interpolation == "bicubic"
    cfg = compose("train", ["data=miniplaces"])
    resolve_normalization(cfg)
    assert list(cfg.data.mean) == pytest.approx(IMAGENET_MEAN) and list(cfg.data.std) == pytest.approx(IMAGENET_STD)


def test_auto_dinov2_weights_file(compose, tmp_path):
    weights = write_weights(tmp_path / "dino.pth", "vit_small_patch14_dinov2", img_size=28, depth=1)
    cfg = compose("train", ["model=dinov2_s", "data=synthetic", "data.img_size=28", f"model.weights={weights}"])
    resolve_normalization(cfg)  # synthetic's own default is 0.5: DINOv2 was trained on ImageNet statistics
    assert list(cfg.data.mean) == pytest.approx(IMAGENET_MEAN) and list(cfg.data.std) == pytest.approx(IMAGENET_STD)


def test_explicit_value_that_differs_from_the_weights_warns_once(compose, caplog):
    cfg = compose("train", ["model=clip_b16", "model.pretrained=true", "data=miniplaces",
                            "data.mean=[0.485,0.456,0.406]", "data.std=[0.229,0.224,0.225]"])
    with caplog.at_level(logging.WARNING, logger="vitcli"):
        resolve_normalization(cfg)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "data.mean" in warnings[0].message and "data.std" in warnings[0].message
    assert list(cfg.data.mean) == pytest.approx(IMAGENET_MEAN)  # explicit wins, with the warning
    caplog.clear()
    cfg = compose("train", ["model=clip_b16", "model.pretrained=true", "data=miniplaces"])
    with caplog.at_level(logging.WARNING, logger="vitcli"):
        resolve_normalization(cfg)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    assert list(cfg.data.std) == pytest.approx(CLIP_STD)
    assert cfg.augmentation.crop_pct == pytest.approx(0.9)  # CLIP's eval crop, from timm's pretrained cfg


def test_eval_crop_and_interpolation_follow_cnn_weights(compose, tmp_path):
    weights = write_weights(tmp_path / "r18.pth", "resnet18")
    cfg = compose("train", ["model=resnet18", f"model.weights={weights}", "data=synthetic"])
    resolve_normalization(cfg)
    assert cfg.augmentation.crop_pct == pytest.approx(0.95) and cfg.augmentation.interpolation == "bicubic"
    cfg = compose("train", ["model=resnet18", f"model.weights={weights}", "data=synthetic",
                            "augmentation.crop_pct=0.8", "augmentation.interpolation=bilinear"])
    resolve_normalization(cfg)  # explicit values stay
    assert cfg.augmentation.crop_pct == 0.8 and cfg.augmentation.interpolation == "bilinear"


def test_clip_weights_file_run_records_clip_statistics(train_tiny, tmp_path):
    """A real (tiny) run from a CLIP weights file: config.yaml carries CLIP's mean/std for eval/predict/export."""
    weights = write_weights(tmp_path / "clip.pth", "vit_base_patch16_clip_224", img_size=16, patch_size=4,
                            depth=1, embed_dim=32, num_heads=2)
    run = tmp_path / "run"
    train_tiny(run, "model=clip_b16", f"model.weights={weights}", *TINY_VIT, "trainer.epochs=1")
    saved = OmegaConf.load(run / "config.yaml")
    assert list(saved.data.mean) == pytest.approx(CLIP_MEAN) and list(saved.data.std) == pytest.approx(CLIP_STD)
    assert saved.augmentation.crop_pct == pytest.approx(0.9) and saved.augmentation.interpolation == "bicubic"
