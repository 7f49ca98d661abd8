"""Preparing an augmented batch reads nothing back from the device that holds it.

On a GPU a read-back (`.tolist()`, `.item()`, `.nonzero()` of a device tensor) makes the host
wait for every queued kernel, the running training step included, before it can prepare the
next batch: an H200 measured 4 such syncs per step with augmentation=leaderboard, when the
draws came from a CUDA generator. The batch path now draws on the CPU and sends the device
only what it needs. Without a GPU this is checked on PyTorch's `meta` device: its tensors
have shapes and no values, so any read-back of one raises, and a batch that comes out proves
that nothing was read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vitcli.data.arrays import ArrayLoader, ArraySplit
from vitcli.data.batch_transforms import create_batch_augment

PRESETS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "augmentation").glob("*.yaml"))
# RandAugment / AutoAugment run per image through PIL, on the CPU by nature: their batches go to the
# host and back (a read-back the test below expects)
HOST_PRESETS = {"deit", "randaug"}


def loader_on(device: str, compose, preset: str, img: int = 24, size: int = 32) -> ArrayLoader:
    cfg = compose("train", [f"augmentation={preset}", f"data.img_size={size}", "data.mean=[0.5,0.5,0.5]",
                            "data.std=[0.25,0.25,0.25]"])
    rng = np.random.default_rng(0)
    split = ArraySplit(rng.integers(0, 256, (20, img, img, 3), dtype=np.uint8), np.arange(20) % 4,
                       [f"s{i}" for i in range(20)])
    return ArrayLoader(split, 8, size, cfg.data.mean, cfg.data.std, shuffle=True,
                       augment=create_batch_augment(cfg.augmentation, cfg.data), seed=3, device=device)


@pytest.mark.parametrize("preset", [p for p in PRESETS if p not in HOST_PRESETS])
def test_an_augmented_batch_reads_nothing_back_from_its_device(preset, compose):
    """Every batched preset prepares its batches on the meta device: gather, resize to img_size,
    crops, flips, colour, erasing and normalization all run without reading a device value."""
    loader = loader_on("meta", compose, preset)
    batches = list(loader)
    assert len(batches) == 3
    for x, y in batches[:2]:
        assert x.device.type == "meta" and tuple(x.shape) == (8, 3, 32, 32) and x.dtype == torch.float32
        assert y.device.type == "meta" and tuple(y.shape) == (8,)


@pytest.mark.parametrize("preset", sorted(HOST_PRESETS))
def test_per_image_pil_presets_are_the_ones_that_go_through_the_host(preset, compose):
    """The exemption above is exact: these presets do read their batch back (RandAugment in PIL)."""
    loader = loader_on("meta", compose, preset)
    with pytest.raises(NotImplementedError, match="meta"):
        next(iter(loader))

