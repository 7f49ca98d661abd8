"""Procedurally generated, learnable images: any size, class count and sample count.

Class c has its own grating orientation and stripe frequency. With difficulty=easy each
class also has its own colour and the noise is light: any model reaches 100% in an epoch,
which makes the set useless for telling a right number from a wrong one. difficulty=hard
(the default) gives every sample a random colour, jitters orientation and frequency, adds a
distracting grating, a bright blob and heavy pixel noise: a small ViT needs several epochs,
so runs, checkpoints and ensemble members end with different accuracies.
"""

from __future__ import annotations

import numpy as np

from vitcli.data.arrays import ArraySplit

# noise sd, orientation jitter (share of the gap between classes), frequency jitter, distractor weight
_LEVELS = {"easy": (0.08, 0.0, 0.0, 0.0), "hard": (0.2, 0.25, 0.2, 0.4)}


def make_synthetic(num_samples: int, num_classes: int, size: int, seed: int = 0,
                   difficulty: str = "hard") -> tuple[ArraySplit, list[str]]:
    noise, angle_jitter, freq_jitter, distract = _LEVELS[str(difficulty)]
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
        a = angles[lab] + rng.uniform(-1, 1, n) * angle_jitter * np.pi / num_classes
        f = freqs[lab] * (1 + rng.uniform(-1, 1, n) * freq_jitter)
        a, f = a[:, None, None], f[:, None, None]
        phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * f * (xx * np.cos(a) + yy * np.sin(a)) + phase)
        if distract:  # a grating of a random other orientation and frequency on top
            a2, f2 = rng.uniform(0, np.pi, (n, 1, 1)), rng.uniform(1.5, 4.0, (n, 1, 1))
            wave = (wave + distract * (0.5 + 0.5 * np.sin(2 * np.pi * f2 * (xx * np.cos(a2) + yy * np.sin(a2))))) / (1 + distract)
        color = colors[lab] if difficulty == "easy" else rng.uniform(0.2, 1.0, (n, 3))
        by, bx = rng.uniform(0.2, 0.8, (2, n, 1, 1))
        blob = np.exp(-((yy - by) ** 2 + (xx - bx) ** 2) / 0.02)
        img = wave[..., None] * color[:, None, None, :] + 0.3 * blob[..., None]
        img += rng.normal(0, noise, img.shape)
        images[start : start + n] = np.clip(img * 255, 0, 255).astype(np.uint8)
    ids = [f"synthetic/{i:06d}" for i in range(num_samples)]
    return ArraySplit(images, labels, ids), [f"class_{c}" for c in range(num_classes)]
