"""The per-image train transforms of `transforms.train_stages`, run on whole batches.

Batches are (N, 3, H, W), 0..255, uint8 or float, already resized to img_size. Each
timm/torchvision transform of the stages maps to one batched op here (`batch_op`) that
reads its settings from that transform and draws from the same distribution, so a
preset means the same thing on image files and on arrays; a transform with no batched
form is an error, not a silent skip. Crop and flip keep uint8 (4x less memory traffic
on CPU); ops that need floats convert. Ops may work in place on the batch they are
given (the loader owns it).

Every op draws its per-sample randomness from one CPU torch.Generator, so a batch's
augmentation is a pure function of its seed (exact resume), and runs on the device that
holds the batch (the GPU when there is one). The draws stay on the CPU and only what the
device needs (crop boxes, flip indices, factors) goes to it, asynchronously: nothing is read
back from the device, so preparing the next batch never waits for the running step (a
draw made on a CUDA generator and read with .tolist(), .item() or .nonzero() did: 4 host
syncs per step with augmentation=leaderboard on an H200).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from timm.data.auto_augment import AugMixAugment, AutoAugment, RandAugment
from timm.data.random_erasing import RandomErasing
from timm.data.transforms import MaybeToTensor, RandomResizedCropAndInterpolation
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2.functional import rgb_to_grayscale

from vitcli.core.rng import seeded
from vitcli.data.crops import crop_boxes, resized_crops
from vitcli.data.transforms import train_stages

if TYPE_CHECKING:
    from vitcli.core.schema import AugmentationConfig, DataConfig

Op = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _uniform(shape, gen: torch.Generator, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return torch.rand(shape, generator=gen, device=gen.device) * (high - low) + low


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor of draws on `device` without a host sync (CUDA: pinned, non-blocking)."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def random_crop(padding: int) -> Op:
    """torchvision RandomCrop(size, padding) per sample: a shift by up to `padding` px with zero fill."""

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


def crop_mode(interpolation: str | InterpolationMode) -> str:
    """The resampling of a torchvision interpolation: PIL's smoother kernels (lanczos, hamming,
    box) are closest to bicubic, the smoothest `resized_crops` has."""
    name = InterpolationMode(interpolation).value
    return {"nearest": "nearest", "nearest-exact": "nearest", "bilinear": "bilinear"}.get(name, "bicubic")


def random_resized_crop(scale: Sequence[float], ratio: Sequence[float] = (3 / 4, 4 / 3),
                        interpolation: str | InterpolationMode | Sequence = "bilinear") -> Op:
    """timm's RandomResizedCropAndInterpolation per sample: timm's box draws (`crops.crop_boxes`),
    PIL's resampling of each box (`crops.resized_crops`); a list of interpolations (timm's
    `random`) draws one per sample."""
    many = isinstance(interpolation, (list, tuple))
    modes = [crop_mode(m) for m in (interpolation if many else [interpolation])]

    def op(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        boxes = crop_boxes(n, h, w, scale, ratio, gen)
        pick = torch.randint(0, len(modes), (n,), generator=gen, device=gen.device) if many else None
        return resized_crops(x.float(), to_device(boxes, x.device), modes,
                             None if pick is None else to_device(pick, x.device))

    return op


def hflip(prob: float) -> Op:
    """Flip a random subset in place: only the flipped samples are copied."""

    def op(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        flip = (_uniform(x.shape[0], gen) < prob).nonzero().flatten()
        if len(flip):
            flip = to_device(flip, x.device)
            x[flip] = x[flip].flip(-1)
        return x

    op.prob = prob  # read by gather_crop_flip
    return op


BRIGHTNESS, CONTRAST, SATURATION = 0, 1, 2


def apply_color_jitter(x: torch.Tensor, kinds: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_brightness / adjust_contrast / adjust_saturation with a factor per sample,
    in a per-sample order: step k applies kind kinds[:, k] with factor factors[:, k] to each sample.
    Each is a blend with a target (black, the grayscale mean, the grayscale image), clamped."""
    x = x.float()
    shape = (len(x), 1, 1, 1)
    for kind, factor in zip(kinds.T, factors.T):
        kind, factor = kind.view(shape), factor.view(shape)
        gray = rgb_to_grayscale(x)
        target = torch.where(kind == SATURATION, gray, gray.mean(dim=(1, 2, 3), keepdim=True))
        target = torch.where(kind == BRIGHTNESS, torch.zeros_like(target), target)
        x = (x * factor + target * (1 - factor)).clamp_(0, 255)
    return x


def color_jitter(brightness=0.0, contrast=0.0, saturation=0.0) -> Op:
    """torchvision's ColorJitter(brightness, contrast, saturation) per sample: each factor uniform
    in torchvision's range for it, the ops in a random order per sample (ColorJitter's randperm)."""
    jitter = T.ColorJitter(brightness, contrast, saturation)  # the ranges, checked as torchvision checks them
    ranges = [(kind, r) for kind, r in ((BRIGHTNESS, jitter.brightness), (CONTRAST, jitter.contrast),
                                        (SATURATION, jitter.saturation)) if r is not None]

    def op(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        factors = torch.stack([_uniform(n, gen, lo, hi) for _, (lo, hi) in ranges], dim=1)
        order = torch.rand(n, len(ranges), generator=gen, device=gen.device).argsort(dim=1)
        kinds = torch.tensor([kind for kind, _ in ranges])[order]
        return apply_color_jitter(x, to_device(kinds, x.device), to_device(factors.gather(1, order), x.device))

    return op


def per_sample_pil(transform: Callable) -> Op:
    """Run a PIL transform (timm RandAugment, AutoAugment, AugMix) on each image, on the CPU."""
    def op(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        arrays = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        with seeded(draw_seed(gen)):
            out = [np.asarray(transform(Image.fromarray(a))) for a in arrays]
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().to(x.device)

    return op


def draw_seed(gen: torch.Generator) -> int:
    """One seed for the global RNGs, drawn from the batch's generator (so it follows the batch seed)."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=gen, device=gen.device).item())


def random_erasing(erase: RandomErasing) -> Op:
    """timm's RandomErasing (its settings as given) over the batch, on the batch's device;
    applied after normalization, as on image files."""
    def op(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        here = copy.copy(erase)
        here.device = x.device
        with seeded(draw_seed(gen)):
            if x.is_cuda:
                with torch.random.fork_rng(devices=[x.device]):
                    torch.cuda.manual_seed(int(torch.randint(0, 2**31 - 1, (1,)).item()))
                    return here(x.clone())
            return here(x.clone())

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
        flips = (_uniform(n, gen) < ops[k].prob).tolist()
        k += 1
    if k == 0:  # no crop or flip to fold in: one gather of the batch, then one transposing copy
        return torch.from_numpy(np.ascontiguousarray(np.asarray(images[idx]).transpose(0, 3, 1, 2))), ops
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


# Transforms the loader does itself: it resizes each batch to img_size, and converts and
# normalizes with the same data.mean / data.std after the augmentation.
_LOADER_DOES = (T.Resize, MaybeToTensor, T.ToTensor, T.Normalize)


def batch_op(transform: Callable) -> Op | None:
    """The batched op of one per-image train transform (None: the loader does it itself)."""
    if isinstance(transform, _LOADER_DOES):
        return None
    if isinstance(transform, RandomResizedCropAndInterpolation):
        return random_resized_crop(transform.scale, transform.ratio, transform.interpolation)
    if isinstance(transform, T.RandomCrop) and transform.padding_mode == "constant" and transform.fill == 0:
        return random_crop(int(transform.padding))
    if isinstance(transform, T.RandomHorizontalFlip):
        return hflip(float(transform.p))
    if isinstance(transform, T.ColorJitter) and transform.hue is None:
        return color_jitter(*(r or 0.0 for r in (transform.brightness, transform.contrast, transform.saturation)))
    if isinstance(transform, (RandAugment, AutoAugment, AugMixAugment)):
        return per_sample_pil(transform)
    if isinstance(transform, RandomErasing):
        return random_erasing(transform)
    raise TypeError(f"{transform!r} has no batched form in vitcli/data/batch_transforms.py; add one there so "
                    "image files and arrays keep augmenting alike")


def create_batch_augment(aug_cfg: AugmentationConfig, data_cfg: DataConfig) -> BatchAugment | None:
    """The batch pipeline of an augmentation preset, None when it does nothing: the batched form
    of each transform of `train_stages`, random erasing after normalization as on image files.

    Args:
        aug_cfg: the augmentation group (a preset plus overrides).
        data_cfg: the data group (img_size, mean: RandAugment's translation and fill follow them).

    >>> augment = create_batch_augment(cfg.augmentation, cfg.data)  # doctest: +SKIP
    >>> x = augment(uint8_batch_nchw, torch.Generator().manual_seed(0))  # doctest: +SKIP
    """
    geometry, colour, final = train_stages(aug_cfg, data_cfg)
    ops = [op for op in map(batch_op, geometry + colour) if op is not None]
    post = [op for op in map(batch_op, final) if op is not None]
    return BatchAugment(ops, post) if ops or post else None
