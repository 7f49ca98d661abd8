"""Augmentations applied to whole batches of float images (N, 3, H, W), 0..255.

Each op draws its per-sample randomness from one torch.Generator, so a batch's
augmentation is a pure function of its seed (exact resume) and runs on the
device that holds the batch (the GPU when there is one).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

Op = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _uniform(n: int, gen: torch.Generator, device, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) * (high - low) + low


def random_crop(padding: int) -> Op:
    """RandomCrop(size, padding) per sample: zero-pad, then crop at a random offset."""

    def op(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, c, h, w = x.shape
        padded = F.pad(x, (padding, padding, padding, padding))
        oy = torch.randint(0, 2 * padding + 1, (n,), generator=gen, device=x.device)
        ox = torch.randint(0, 2 * padding + 1, (n,), generator=gen, device=x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device)[None])[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=x.device)[None])[:, None, None, :]
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chan = torch.arange(c, device=x.device)[None, :, None, None]
        return padded[batch, chan, rows, cols]

    return op


def random_resized_crop(scale: Sequence[float], ratio: Sequence[float] = (3 / 4, 4 / 3)) -> Op:
    """RandomResizedCrop per sample through one affine grid_sample over the batch."""

    def op(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        area = _uniform(n, gen, x.device, scale[0], scale[1])
        log_r = _uniform(n, gen, x.device, torch.log(torch.tensor(ratio[0])).item(), torch.log(torch.tensor(ratio[1])).item())
        aspect = torch.exp(log_r)
        sw = torch.sqrt(area * aspect).clamp(max=1.0)  # crop width / image width
        sh = torch.sqrt(area / aspect).clamp(max=1.0)
        cx = (_uniform(n, gen, x.device) * 2 - 1) * (1 - sw)  # crop centre in [-1, 1]
        cy = (_uniform(n, gen, x.device) * 2 - 1) * (1 - sh)
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0], theta[:, 0, 2] = sw, cx
        theta[:, 1, 1], theta[:, 1, 2] = sh, cy
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    return op


def hflip(prob: float) -> Op:
    def op(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        flip = _uniform(x.shape[0], gen, x.device) < prob
        return torch.where(flip[:, None, None, None], x.flip(-1), x)

    return op


class BatchAugment:
    """A sequence of batch ops, applied in order with one generator."""

    def __init__(self, ops: list[Op]):
        self.ops = ops

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        for op in self.ops:
            x = op(x, gen)
        return x


def create_batch_augment(aug_cfg: Any) -> BatchAugment | None:
    """The batch pipeline for an augmentation preset (None when it does nothing)."""
    ops: list[Op] = []
    if aug_cfg.scale:
        ops.append(random_resized_crop(list(aug_cfg.scale)))
    elif aug_cfg.random_crop_padding:
        ops.append(random_crop(int(aug_cfg.random_crop_padding)))
    if aug_cfg.hflip:
        ops.append(hflip(float(aug_cfg.hflip)))
    return BatchAugment(ops) if ops else None
