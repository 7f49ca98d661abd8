"""`vitcli preview`'s library: one training batch exactly as the model receives it.

The batch comes from the same train loader the Trainer builds (per-sample timm transforms
for image files, the batched ops for in-memory / packed arrays), then goes through the
same MixUp/CutMix and Gaussian noise as Trainer.forward_backward; it is drawn
un-normalized with its (possibly mixed) labels.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from vitcli.core import runs
from vitcli.core.errors import UserError
from vitcli.data import create_data
from vitcli.data.mixing import create_mixup, mix_batch
from vitcli.data.normalization import resolve_normalization
from vitcli.viz.gallery import denormalize, draw_grid

log = logging.getLogger("vitcli")


def label_caption(target: np.ndarray, names: list[str], parts: int = 2) -> str:
    """A class name, or for soft targets (MixUp/CutMix, label smoothing) the largest weights."""
    if target.ndim == 0:
        return names[int(target)]
    top = np.argsort(-target, kind="stable")[:parts]
    return "\n".join(f"{target[c]:.2f} {names[c]}" for c in top if target[c] >= 0.01)


class PreviewBatch(NamedTuple):
    """The first training batch, as the model receives it."""

    images: torch.Tensor  # normalized (n, 3, H, W)
    targets: torch.Tensor  # (n,) class indices, or (n, C) when mixed or smoothed
    class_names: list[str]
    data_format: str  # the path the data took: memory, packed, files, stream (data.format=auto resolved)


def training_batch(cfg: Any, n: int) -> PreviewBatch:
    """The first training batch of `n` images, with what the train step does to it."""
    if n <= 0:
        raise UserError(f"n={n}: preview at least one image (e.g. n=32)")
    mixup = create_mixup(cfg.augmentation, cfg.regularization.label_smoothing, 2)
    if mixup is not None and n % 2:
        raise UserError(f"n={n}: MixUp/CutMix pair images, so n must be even (e.g. n={n + 1})")
    resolve_normalization(cfg)  # the mean/std the run would train with (the weights' own when pretrained)
    torch.manual_seed(cfg.trainer.seed)
    cfg.data.batch_size = n  # one loader batch is the preview
    data = create_data(cfg, device="cpu", train=True)
    loader = data.loader("train")
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(0)
    x, y = next(iter(loader))
    mixup = create_mixup(cfg.augmentation, cfg.regularization.label_smoothing, data.num_classes)
    x, y = mix_batch(x, y, mixup, cfg.augmentation)  # exactly what the train step does
    return PreviewBatch(x, y, list(data.class_names), str(data.info["data_format"]))


def write_preview(cfg: Any, run_dir: Path, n: int = 32) -> Path:
    """Draw the batch into <run_dir>/plots/preview.png; return its path."""
    x, y, names, data_format = training_batch(cfg, n)
    captions = [label_caption(t, names) for t in y.cpu().numpy()]
    aug = cfg.augmentation
    mixing = f" · mixup {aug.mixup_alpha} / cutmix {aug.cutmix_alpha}" if (aug.mixup_alpha or aug.cutmix_alpha) else ""
    title = (f"{cfg.data.name} ({data_format}) · augmentation={aug.name}{mixing} · "
             f"{len(x)} images at {x.shape[-1]} px, as the model receives them (un-normalized)")
    out = draw_grid(runs.plot_path(run_dir, "preview.png"), denormalize(x, cfg.data.mean, cfg.data.std),
                    captions, title, cols=8, cell=1.5)
    log.info(f"wrote {out}")
    return out
