"""Augmentations applied to whole batches of images (N, 3, H, W), 0..255, uint8 or float.

Crop and flip keep uint8 (4x less memory traffic on CPU); ops that need floats convert.

Ops may work in place on the batch they are given (the loader owns it).
Each op draws its per-sample randomness from one torch.Generator, so a batch's
augmentation is a pure function of its seed (exact resume) and runs on the
device that holds the batch (the GPU when there is one).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data.auto_augment import rand_augment_transform
from timm.data.random_erasing import RandomErasing

from vitcli.core.rng import seeded

if TYPE_CHECKING:
    from vitcli.core.schema import AugmentationConfig

Op = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _uniform(n: int, gen: torch.Generator, device, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) * (high - low) + low


def random_crop(padding: int) -> Op:
    """RandomCrop(size, padding) per sample: a shift by up to `padding` px with zero fill."""
    def op(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, c, h, w = x.shape
        dy, dx = _crop_draws(padding, n, gen)
        # one window copy per sample straight from the source: no padded copy of the batch, and
        # no fancy-index gather (which builds N*C*H*W int64 indices and is 10x slower on CPU)
        out = torch.zeros_like(x)
        for i, (oy, ox) in enumerate(zip(dy, dx)):
            out[i, :, max(0, -oy):h - max(0, oy), max(0, -ox):w - max(0, ox)] = \
                x[i, :, max(0, oy):h - max(0, -oy), max(0, ox):w - max(0, -ox)]
        return out

    op.padding = padding  # read by gather_crop_flip
    return op


def _crop_draws(padding: int, n: int, gen: torch.Generator) -> tuple[list[int], list[int]]:
    dy = (torch.randint(0, 2 * padding + 1, (n,), generator=gen, device=gen.device) - padding).tolist()
    dx = (torch.randint(0, 2 * padding + 1, (n,), generator=gen, device=gen.device) - padding).tolist()
    return dy, dx


def random_resized_crop(scale: Sequence[float], ratio: Sequence[float] = (3 / 4, 4 / 3)) -> Op:
    """RandomResizedCrop per sample through one affine grid_sample over the batch."""
    def op(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = x.float()  # grid_sample needs floats (the loader may hand over uint8)
        n = x.shape[0]
        area = _uniform(n, gen, x.device, scale[0], scale[1])
        log_r = _uniform(n, gen, x.device, math.log(ratio[0]), math.log(ratio[1]))
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
    """Flip a random subset in place: only the flipped samples are copied."""
    def op(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        flip = (_uniform(x.shape[0], gen, x.device) < prob).nonzero().flatten()
        if len(flip):
            x[flip] = x[flip].flip(-1)
        return x

    op.prob = prob  # read by gather_crop_flip

    return op


def color_jitter(strength: float) -> Op:
    """Per-sample brightness, contrast and saturation factors in [1-s, 1+s]."""
    def op(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        b, c, s = (_uniform(n, gen, x.device, 1 - strength, 1 + strength)[:, None, None, None] for _ in range(3))
        x = x * b
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * c + mean
        gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        x = (x - gray) * s + gray
        return x.clamp(0, 255)

    return op


def per_sample_pil(transform: Callable) -> Op:
    """Run a PIL transform (e.g. timm RandAugment) on each image, on the CPU."""
    def op(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        arrays = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        with seeded(draw_seed(gen)):
            out = [np.asarray(transform(Image.fromarray(a))) for a in arrays]
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().to(x.device)

    return op


def draw_seed(gen: torch.Generator) -> int:
    """One seed for the global RNGs, drawn from the batch's generator (so it follows the batch seed)."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=gen, device=gen.device).item())


def random_erasing(prob: float, mode: str, count: int) -> Op:
    """timm's RandomErasing over the batch; applied after normalization (as in timm)."""
    def op(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        erase = RandomErasing(prob, mode=mode, max_count=count, device=x.device)
        with seeded(draw_seed(gen)):
            if x.is_cuda:
                with torch.random.fork_rng(devices=[x.device]):
                    torch.cuda.manual_seed(int(torch.randint(0, 2**31 - 1, (1,)).item()))
                    return erase(x.clone())
            return erase(x.clone())

    return op


def gather_crop_flip(images: np.ndarray, idx: np.ndarray, ops: list[Op], gen: torch.Generator):
    """CPU fast path: gather uint8 NHWC samples into NCHW, applying the leading random_crop /
    hflip ops in the same single copy (numpy views transpose and mirror for free). Draws the
    same random numbers in the same order as the ops would, so the result is identical.
    Returns (NCHW uint8 tensor, the ops still to run)."""
    n, (h, w) = len(idx), images.shape[1:3]
    dy = dx = [0] * n
    flips = [False] * n
    k = 0
    if k < len(ops) and hasattr(ops[k], "padding"):
        dy, dx = _crop_draws(ops[k].padding, n, gen)
        k += 1
    if k < len(ops) and hasattr(ops[k], "prob"):
        flips = (_uniform(n, gen, gen.device) < ops[k].prob).tolist()
        k += 1
    out = np.zeros((n, 3, h, w), dtype=np.uint8) if any(dy) or any(dx) else np.empty((n, 3, h, w), np.uint8)
    for i, (j, oy, ox, flip) in enumerate(zip(idx, dy, dx, flips)):
        view = images[j].transpose(2, 0, 1)
        if flip:  # mirroring after a crop = cropping the mirror with the x offset negated
            view, ox = view[:, :, ::-1], -ox
        out[i, :, max(0, -oy):h - max(0, oy), max(0, -ox):w - max(0, ox)] = \
            view[:, max(0, oy):h - max(0, -oy), max(0, ox):w - max(0, -ox)]
    return torch.from_numpy(out), ops[k:]


class BatchAugment:
    """Batch ops on 0..255 images (`ops`) and on normalized images (`post_ops`)."""
    def __init__(self, ops: list[Op], post_ops: list[Op] | None = None):
        self.ops = ops
        self.post_ops = post_ops or []

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        for op in self.ops:
            x = op(x, gen)
        return x

    def post(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        for op in self.post_ops:
            x = op(x, gen)
        return x


def create_batch_augment(aug_cfg: AugmentationConfig) -> BatchAugment | None:
    """The batch pipeline for an augmentation preset (None when it does nothing)."""
    ops: list[Op] = []
    if aug_cfg.scale:
        ops.append(random_resized_crop(list(aug_cfg.scale)))
    elif aug_cfg.random_crop_padding:
        ops.append(random_crop(int(aug_cfg.random_crop_padding)))
    if aug_cfg.hflip:
        ops.append(hflip(float(aug_cfg.hflip)))
    if aug_cfg.color_jitter:
        ops.append(color_jitter(float(aug_cfg.color_jitter)))
    if aug_cfg.auto_augment:
        ops.append(per_sample_pil(rand_augment_transform(aug_cfg.auto_augment, {})))
    post = [random_erasing(aug_cfg.re_prob, aug_cfg.re_mode, aug_cfg.re_count)] if aug_cfg.re_prob else []
    return BatchAugment(ops, post) if ops or post else None
