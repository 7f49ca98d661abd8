"""Random resized crops of whole batches, drawn and resampled as timm and PIL do it per image.

`crop_boxes` draws each sample's box from timm's RandomResizedCropAndInterpolation
distribution; `resized_crops` resamples every box to the output size as PIL resizes a
cropped image (filters centred on pixel centres, taps outside the box dropped and the
rest renormalized), as two batched matrix products: no per-sample Python, any device.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch


def _uniform(shape, gen: torch.Generator, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return torch.rand(shape, generator=gen, device=gen.device) * (high - low) + low


def crop_boxes(n: int, h: int, w: int, scale: Sequence[float], ratio: Sequence[float], gen: torch.Generator,
               attempts: int = 10) -> torch.Tensor:
    """(n, 4) int boxes (top, left, height, width), drawn as timm's RandomResizedCropAndInterpolation
    draws them: up to 10 tries of an area in `scale` and a log-uniform aspect in `ratio`, rounded
    to whole pixels, the first that fits the image; else the centre crop at the nearest aspect.

    >>> crop_boxes(64, 32, 32, (0.75, 1.0), (0.85, 1.18), torch.Generator().manual_seed(0)).shape
    torch.Size([64, 4])
    """
    area = _uniform((n, attempts), gen, scale[0], scale[1]) * (h * w)
    aspect = torch.exp(_uniform((n, attempts), gen, math.log(ratio[0]), math.log(ratio[1])))
    cw, ch = torch.round(torch.sqrt(area * aspect)), torch.round(torch.sqrt(area / aspect))
    fits = (cw <= w) & (ch <= h)
    first = fits.float().argmax(dim=1, keepdim=True)  # the first try that fits
    found = fits.any(dim=1)
    fallback_h, fallback_w = _centre_crop_size(h, w, ratio)
    ch = torch.where(found, ch.gather(1, first).squeeze(1), float(fallback_h))
    cw = torch.where(found, cw.gather(1, first).squeeze(1), float(fallback_w))
    # random.randint(0, h - ch) as floor(u * (h - ch + 1)); the fallback is centred
    top = torch.where(found, torch.floor(_uniform(n, gen) * (h - ch + 1)), torch.floor((h - ch) / 2))
    left = torch.where(found, torch.floor(_uniform(n, gen) * (w - cw + 1)), torch.floor((w - cw) / 2))
    return torch.stack([top, left, ch, cw], dim=1).long()


def _centre_crop_size(h: int, w: int, ratio: Sequence[float]) -> tuple[int, int]:
    """timm's fallback crop (height, width) when no try fits: the whole image at the nearest allowed aspect."""
    if w / h < min(ratio):
        return int(round(w / min(ratio))), w
    if w / h > max(ratio):
        return h, int(round(h * max(ratio)))
    return h, w


def _cubic(d: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """PIL's bicubic filter (Keys, a = -0.5)."""
    d = d.abs()
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return torch.where(d < 1, near, torch.where(d < 2, far, torch.zeros_like(d)))


def _axis_weights(start: torch.Tensor, length: torch.Tensor, size_in: int, size_out: int, mode: str) -> torch.Tensor:
    """(n, size_out, size_in): each output pixel's weights over the input along one axis, for
    boxes [start, start + length) resampled to size_out pixels (never wider: no antialiasing)."""
    start, length = start.float()[:, None, None], length.float()[:, None, None]
    centre = start + (torch.arange(size_out, device=start.device)[None, :, None] + 0.5) * (length / size_out)
    if mode == "nearest":
        taps, weights = torch.floor(centre), torch.ones_like(centre)
    else:
        reach = 2 if mode == "bicubic" else 1
        taps = torch.floor(centre - 0.5) + torch.arange(1 - reach, reach + 1, device=start.device)
        distance = taps + 0.5 - centre
        weights = _cubic(distance) if mode == "bicubic" else (1 - distance.abs()).clamp(min=0)
    weights = weights * ((taps >= start) & (taps < start + length))  # PIL drops taps outside the box ...
    weights = weights / weights.sum(dim=-1, keepdim=True)  # ... and renormalizes the rest
    matrix = torch.zeros(len(start), size_out, size_in, device=start.device)
    return matrix.scatter_add_(2, taps.clamp(0, size_in - 1).long(), weights)


def resized_crops(x: torch.Tensor, boxes: torch.Tensor, modes: Sequence[str],
                  pick: torch.Tensor | None = None) -> torch.Tensor:
    """Each sample's box (top, left, height, width) of x (N, C, H, W, float 0..255) resampled to
    H x W as PIL resizes the cropped image, with `modes[pick[i]]` (nearest | bilinear | bicubic;
    pick None: modes[0] for all).

    >>> boxes = torch.tensor([[0, 0, 16, 16]])  # the top-left quarter, zoomed 2x
    >>> resized_crops(torch.rand(1, 3, 32, 32) * 255, boxes, ["bicubic"]).shape
    torch.Size([1, 3, 32, 32])
    """
    n, _, h, w = x.shape

    def axes(mode: str) -> tuple[torch.Tensor, torch.Tensor]:  # (rows' weights, columns' weights)
        if h == w:  # both in one go
            both = _axis_weights(boxes[:, :2].T.reshape(-1), boxes[:, 2:].T.reshape(-1), h, h, mode)
            return both[:n], both[n:]
        return _axis_weights(boxes[:, 0], boxes[:, 2], h, h, mode), _axis_weights(boxes[:, 1], boxes[:, 3], w, w, mode)

    pairs = [axes(mode) for mode in modes]
    rows, cols = pairs[0]
    if pick is not None:  # one mode per sample (timm's interpolation='random')
        which = pick, torch.arange(n, device=x.device)
        rows, cols = torch.stack([r for r, _ in pairs])[which], torch.stack([c for _, c in pairs])[which]
    out = x @ cols.transpose(1, 2)[:, None]  # PIL resizes along x first, then along y,
    if "bicubic" in modes:
        out = out.clamp_(0, 255)  # clipping bicubic's overshoot to the image range after each pass
    out = rows[:, None] @ out
    return out.clamp_(0, 255) if "bicubic" in modes else out
