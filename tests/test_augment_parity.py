"""Image files and arrays augment alike: every augmentation preset through both train paths.

The per-image path (timm/torchvision transforms on each decoded file, `data.format=files`)
and the batched path (the same transforms as batch ops, `data.format=packed`) must draw
from the same distributions. 512 probe images of each kind go through both train loaders
for every preset in conf/augmentation/, and what the augmentation did is measured back
from the images it produced:

- ramp probes (red = 8x+4, green = 8y+4, blue 0): the crop's width and height (the ramps'
  slopes), flips (the red slope's sign), shifts (the zero-padded bands), RandAugment's fill
  (pixels of the dataset-mean colour) and random erasing (pixels of noise);
- checker probes (a 1-px checkerboard of two colours): the brightness, contrast and
  saturation factors, solved from where the two colours and the padded band went.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.transforms import RandomResizedCropAndInterpolation
from torchvision.transforms.v2 import functional as TF

from vitcli.core.rng import seeded
from vitcli.data import create_data
from vitcli.data.batch_transforms import (
    BRIGHTNESS,
    CONTRAST,
    SATURATION,
    apply_color_jitter,
    create_batch_augment,
)
from vitcli.data.crops import crop_boxes, resized_crops
from vitcli.data.prepare import prepare

SIZE = 32
PER_KIND = 512
PRESETS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "augmentation").glob("*.yaml"))
GREEN, RED = np.array([50.0, 140.0, 40.0]), np.array([130.0, 60.0, 30.0])  # the checker's two colours
LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601 grey, as PIL and torchvision compute it


def ramp() -> np.ndarray:
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    img[..., 0] = 8 * np.arange(SIZE)[None, :] + 4
    img[..., 1] = 8 * np.arange(SIZE)[:, None] + 4
    return img


def checker() -> np.ndarray:
    y, x = np.mgrid[:SIZE, :SIZE]
    return np.where(((x + y) % 2 == 0)[..., None], GREEN, RED).astype(np.uint8)


@pytest.fixture(scope="module")
def probes(tmp_path_factory, compose):
    """An imagefolder of PER_KIND ramps (class `a_ramp`) and checkers (`b_checker`), packed as well."""
    root = tmp_path_factory.mktemp("parity") / "probes"
    for split, count in (("train", PER_KIND), ("val", 1)):
        for cls, img in (("a_ramp", ramp()), ("b_checker", checker())):
            (root / split / cls).mkdir(parents=True)
            for k in range(count):
                Image.fromarray(img).save(root / split / cls / f"{k:04d}.png")
    prepare(compose("train", ["data=imagefolder", f"data.root={root}"]).data, None, None, workers=1, overwrite=False)
    return root


def augmented(compose, root: Path, fmt: str, preset: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(one epoch of the train loader un-normalized to 0..255 NHWC, labels, the fill colour)."""
    cfg = compose("train", ["data=imagefolder", f"data.root={root}", f"data.format={fmt}", f"data.img_size={SIZE}",
                            "data.num_workers=0", "data.batch_size=128", f"augmentation={preset}", "trainer.seed=0"])
    loader = create_data(cfg).loader("train")
    loader.set_epoch(0)
    batches = list(loader)
    x = np.concatenate([b[0].numpy() for b in batches]).transpose(0, 2, 3, 1)
    mean, std = np.array(cfg.data.mean), np.array(cfg.data.std)
    return (x * std + mean) * 255, np.concatenate([b[1].numpy() for b in batches]), np.round(mean * 255)


def padded(img: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """(mask of zero-padding pixels, band widths left/right/top/bottom). Padding starts black and
    stays grey (R = G = B) under brightness, contrast and saturation; the probes are never grey."""
    grey = np.ptp(img, axis=-1) < 1.5

    def band(lines: np.ndarray) -> int:
        return int(np.argmin(np.append(lines, False)))

    cols, rows = grey.mean(0) > 0.9, grey.mean(1) > 0.9
    return grey, (band(cols), band(cols[::-1]), band(rows), band(rows[::-1]))


def ramp_measures(img: np.ndarray, fill: np.ndarray) -> dict[str, float]:
    """Crop box, flip and shift of a ramp probe, the share of fill-coloured pixels and whether
    random erasing left noise. The crop comes from the grey level's slopes: brightness, contrast
    and saturation scale grey by one gain (b c) and keep its direction, so the aspect is exact
    under colour jitter and the width and height are gain x the true ones."""
    _, (left, right, top, bottom) = padded(img)
    laplace = np.abs(img[1:-1, 1:-1] * 4 - img[:-2, 1:-1] - img[2:, 1:-1] - img[1:-1, :-2] - img[1:-1, 2:]).min(-1)
    out = {"dx": right - left, "dy": bottom - top, "fill": float((np.abs(img - fill).max(-1) < 2.5).mean()),
           "erased": float((laplace > 40).mean() > 0.02), "width": np.nan, "height": np.nan, "flip": np.nan,
           "ramp_clean": 0.0}
    body = img[top + 2:SIZE - bottom - 2, left + 2:SIZE - right - 2] @ LUMA  # inset: resampling bends the edges
    h, w = body.shape
    if h >= 4 and w >= 4:
        yy, xx = np.mgrid[:h, :w]
        design = np.stack([np.ones(h * w), xx.ravel(), yy.ravel()], axis=1)
        fit = np.linalg.lstsq(design, body.ravel(), rcond=None)[0]
        _, slope_x, slope_y = fit
        # the source's grey rises 8 x 0.299 per pixel along x and 8 x 0.587 along y, so an output
        # slope s means a crop of s / (8 x weight) x SIZE source pixels
        out.update(width=abs(slope_x) / (8 * LUMA[0]) * SIZE, height=abs(slope_y) / (8 * LUMA[1]) * SIZE,
                   flip=float(slope_x < 0), ramp_clean=float(np.abs(design @ fit - body.ravel()).max() < 3))
    return out


def checker_measures(img: np.ndarray) -> dict[str, float]:
    """Brightness b, contrast c and saturation s of a checker probe (exact for colour jitter; for
    RandAugment's colour ops and resampled checkers just numbers that both paths must share).

    Each of torchvision's three ops blends with a target: black, the grey mean m, the grey image.
    Together, in any order, a colour p becomes g p + d grey(p) + k with g = b c s, d = b c (1 - s),
    k = b (1 - c) m0, m0 = the grey mean before the ops (the padded band counting as black)."""
    grey, _ = padded(img)
    body = img[~grey]
    green = body[:, 1] > body[:, 0]  # positive factors keep which channel leads
    if green.sum() < 20 or (~green).sum() < 20:
        return dict(b=np.nan, c=np.nan, s=np.nan, clean=0.0)
    o_green, o_red = body[green].mean(0), body[~green].mean(0)
    clean = max(body[green].std(0).max(), body[~green].std(0).max()) < 3  # still two flat colours
    lum_green, lum_red = LUMA @ GREEN, LUMA @ RED
    design = np.stack([GREEN - RED, np.full(3, lum_green - lum_red)], axis=1)
    g, d = np.linalg.lstsq(design, o_green - o_red, rcond=None)[0]
    k = float(np.mean(o_green - g * GREEN - d * lum_green))
    m0 = (~grey).mean() * (lum_green + lum_red) / 2
    b = k / m0 + g + d
    return dict(b=b, c=(g + d) / b, s=g / (g + d), clean=float(clean))


def measures(images: np.ndarray, labels: np.ndarray, fill: np.ndarray) -> dict[str, np.ndarray]:
    rows = [ramp_measures(img, fill) for img in images[labels == 0]]
    rows_checker = [checker_measures(img) for img in images[labels == 1]]
    out = {k: np.array([r[k] for r in rows], dtype=float) for k in rows[0]}
    out.update({k: np.array([r[k] for r in rows_checker], dtype=float) for k in rows_checker[0]})
    out["area"] = out["width"] * out["height"] / SIZE**2
    out["aspect"] = out["width"] / out["height"]
    return out


def gap(a: np.ndarray, b: np.ndarray, tol: float) -> float:
    """How far apart two samples' distributions are: the largest difference of their cumulative
    shares once values within `tol` of each other count as equal (0 for the same distribution;
    for yes/no values with tol < 1, the difference of the two rates)."""
    a, b = np.sort(a[np.isfinite(a)]), np.sort(b[np.isfinite(b)])
    if not len(a) or not len(b):
        return float(len(a) != len(b))
    at = np.concatenate([a, b])

    def share(sample: np.ndarray, x: np.ndarray) -> np.ndarray:
        return np.searchsorted(sample, x, side="right") / len(sample)

    return float(max((share(a, at) - share(b, at + tol)).max(), (share(b, at) - share(a, at + tol)).max(), 0.0))


# what counts as the same value, in each measure's unit (yes/no measures: 0.5)
SAME = {"area": 0.02, "aspect": 0.03, "flip": 0.5, "dx": 0.5, "dy": 0.5, "fill": 0.01, "erased": 0.5,
        "b": 0.03, "c": 0.03, "s": 0.03, "ramp_clean": 0.5, "clean": 0.5}
# of the probes: with 512 of each, the paths' gaps (sampling noise) stayed below 0.103 over trainer seeds 0-3 and 42
MAX_GAP = 0.12
# Where the probes stay clean (straight ramps, two flat colours: no RandAugment or erasing bent
# them), the measures are exact, and their ranges (2 and 98 % quantiles) must agree this well:
RANGES = {"area": ("ramp_clean", 0.03), "aspect": ("ramp_clean", 0.04), "b": ("clean", 0.06),
          "c": ("clean", 0.06), "s": ("clean", 0.06)}


@pytest.mark.parametrize("preset", PRESETS)
def test_files_and_arrays_draw_the_same_augmentation(probes, compose, preset):
    files = measures(*augmented(compose, probes, "files", preset))
    arrays = measures(*augmented(compose, probes, "packed", preset))
    differ = [f"{name}: gap {gap(files[name], arrays[name], same):.3f} > {MAX_GAP}; files {spread(files[name])} "
              f"vs arrays {spread(arrays[name])}" for name, same in SAME.items()
              if gap(files[name], arrays[name], same) > MAX_GAP]
    for name, (clean, tol) in RANGES.items():
        if min(files[clean].mean(), arrays[clean].mean()) > 0.9:
            f, a = (np.quantile(m[name][m[clean] == 1], (0.02, 0.98)) for m in (files, arrays))
            if np.abs(f - a).max() > tol:
                differ.append(f"{name} range: files {f.round(3)} vs arrays {a.round(3)} (2 and 98 % quantiles)")
    assert not differ, f"augmentation={preset} differs between image files and arrays:\n" + "\n".join(differ)


def spread(values: np.ndarray) -> list[float]:
    found = values[np.isfinite(values)]
    return np.quantile(found, (0.1, 0.25, 0.5, 0.75, 0.9)).round(3).tolist() if len(found) else []


def test_batched_colour_jitter_is_torchvisions():
    """Per sample, the batched op equals torchvision's three functional ops, in the drawn order."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 8, 8, generator=gen) * 255
    kinds = torch.rand(64, 3, generator=gen).argsort(dim=1)
    factors = torch.rand(64, 3, generator=gen) * 1.2 + 0.4
    ops = {BRIGHTNESS: TF.adjust_brightness, CONTRAST: TF.adjust_contrast, SATURATION: TF.adjust_saturation}
    expected = []
    for img, order, fs in zip(x / 255, kinds.tolist(), factors.tolist()):
        for kind, factor in zip(order, fs):
            img = ops[kind](img, factor)
        expected.append(img * 255)
    torch.testing.assert_close(apply_color_jitter(x.clone(), kinds, factors), torch.stack(expected), atol=1e-3, rtol=0)


@pytest.mark.parametrize(("scale", "ratio", "size"), [
    ((0.08, 1.0), (3 / 4, 4 / 3), (32, 32)),
    ((0.75, 1.0), (0.85, 1.18), (32, 48)),
    ((1.0, 1.0), (2.0, 3.0), (30, 40)),  # never fits: timm's centre-crop fallback
])
def test_batched_crop_boxes_are_timms(scale, ratio, size):
    """The batched RandomResizedCrop draws its boxes from timm's distribution (tries, rounding, fallback)."""
    h, w = size
    n = 4000
    ours = crop_boxes(n, h, w, scale, ratio, torch.Generator().manual_seed(0)).numpy().astype(float)
    image = Image.new("RGB", (w, h))
    with seeded(0):  # timm draws from `random`
        timms = np.array([RandomResizedCropAndInterpolation.get_params(image, scale, ratio) for _ in range(n)], float)
    for k, name in enumerate(("top", "left", "height", "width")):
        assert gap(ours[:, k], timms[:, k], 0.5) < 0.05, name
    assert gap(ours[:, 2] * ours[:, 3], timms[:, 2] * timms[:, 3], 0.5) < 0.05, "area"


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])  # (nearest: PIL accumulates coordinates, ties differ)
def test_batched_resized_crops_are_pils(mode):
    """Each box resampled as PIL resizes the cropped image (to its uint8 rounding), non-square too."""
    img = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    boxes = crop_boxes(50, 24, 40, (0.08, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(0))
    x = torch.from_numpy(img).permute(2, 0, 1).float().expand(50, -1, -1, -1)
    ours = resized_crops(x, boxes, [mode]).permute(0, 2, 3, 1).numpy()
    resample = Image.Resampling[mode.upper()]
    for out, (top, left, h, w) in zip(ours, boxes.tolist()):
        pil = np.asarray(Image.fromarray(img).crop((left, top, left + w, top + h)).resize((40, 24), resample))
        assert np.abs(out - pil).max() <= 1.1, (mode, top, left, h, w)


def test_a_batchs_augmentation_follows_its_generator_alone(compose):
    """Exact resume: the batched path (RandAugment and erasing included) is a function of the batch's
    generator seed, and the global RNGs the timm ops draw from are left where they were."""
    cfg = compose("train", ["augmentation=deit", "data.img_size=32"])
    augment = create_batch_augment(cfg.augmentation, cfg.data)
    x = (torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)

    def run(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return augment.post(augment(x.clone(), gen), gen)

    before = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    first, again, other = run(0), run(0), run(1)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]
    assert np.array_equal(np.random.get_state()[1], before[2])
