"""Procedurally generated, learnable images: any size, class count and sample count.

Class c has its own grating orientation, stripe frequency and colour; each sample
gets a random phase, a random bright blob and pixel noise. A linear probe can
tell the classes apart, yet a model must see the image (not a constant) to do it.
"""

from __future__ import annotations

import numpy as np

from vitcli.data.arrays import ArraySplit


def make_synthetic(num_samples: int, num_classes: int, size: int, seed: int = 0) -> tuple[ArraySplit, list[str]]:
    rng = np.random.default_rng(seed)
    angles = rng.permutation(num_classes) * (np.pi / num_classes)
    freqs = rng.uniform(1.5, 4.0, num_classes)
    colors = rng.uniform(0.2, 1.0, (num_classes, 3))
    labels = np.arange(num_samples, dtype=np.int64) % num_classes
    rng.shuffle(labels)

    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    images = np.empty((num_samples, size, size, 3), dtype=np.uint8)
    chunk = 512
    for start in range(0, num_samples, chunk):
        lab = labels[start : start + chunk]
        n = len(lab)
        a, f = angles[lab][:, None, None], freqs[lab][:, None, None]
        phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * f * (xx * np.cos(a) + yy * np.sin(a)) + phase)
        by, bx = rng.uniform(0.2, 0.8, (2, n, 1, 1))
        blob = np.exp(-((yy - by) ** 2 + (xx - bx) ** 2) / 0.02)
        img = wave[..., None] * colors[lab][:, None, None, :] + 0.3 * blob[..., None]
        img += rng.normal(0, 0.08, img.shape)
        images[start : start + n] = np.clip(img * 255, 0, 255).astype(np.uint8)
    ids = [f"synthetic/{i:06d}" for i in range(num_samples)]
    return ArraySplit(images, labels, ids), [f"class_{c}" for c in range(num_classes)]
