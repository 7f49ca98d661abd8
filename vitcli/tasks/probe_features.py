"""Frozen features for probes: one pass of a backbone over a split, cached as fp16.

Two layer choices (DINOv2's linear evaluation reads the same ones):
- `pooled`: the model's own pooled pre-logits features (`forward_head(..., pre_logits=True)`);
- `tokens`: for each of the last `blocks` blocks, the class token (the average patch token
  when the model has none), plus the last block's average patch token, concatenated; for
  Swin and Mixer the average of each of the last stages' / blocks' maps.
The cache lives in <run>/probe/features/<key>/<split>.npz, where the key holds a hash of the
weights, the layer choice and the input size, so new weights or layers never reuse stale features.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from vitcli.core.errors import UserError
from vitcli.core.io import atomic_write
from vitcli.models.families import model_family

log = logging.getLogger("vitcli")


@dataclass
class FeatureSet:
    features: np.ndarray  # (N, D) float16
    labels: np.ndarray  # (N,) int64, -1 where unknown
    ids: list[str]

    @property
    def labelled(self) -> bool:
        return len(self.labels) > 0 and bool((self.labels >= 0).all())


def weights_hash(model) -> str:
    """A short hash of every tensor of the model (names, shapes, bytes)."""
    digest = hashlib.blake2b(digest_size=8)
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-d too
    return digest.hexdigest()


def feature_fn(model, layers: str, blocks: int, where: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> (B, D) features of the chosen layers (one-line error when the model cannot give them)."""
    if layers == "pooled":
        return lambda x: model.forward_head(model.forward_features(x), pre_logits=True).flatten(1)
    family = model_family(model)
    if family is None or not hasattr(model, "forward_intermediates"):
        raise UserError(f"probe.layers=tokens: {where} ({type(model).__name__}) cannot give the tokens of its last "
                        "blocks; use probe.layers=pooled")
    if blocks < 1:
        raise UserError(f"probe.blocks={blocks} must be at least 1")

    def intermediates(x: torch.Tensor, **kwargs: Any):
        try:
            return model.forward_intermediates(x, indices=blocks, intermediates_only=True, norm=True, **kwargs)
        except (AssertionError, IndexError, ValueError) as err:
            raise UserError(f"probe.blocks={blocks}: {where} ({type(model).__name__}) has fewer blocks than that "
                            f"({err})") from err

    if family.tokens == "map":
        return lambda x: torch.cat([m.mean(dim=(2, 3)) for m in intermediates(x)], dim=1)

    def prefix_tokens(x: torch.Tensor) -> torch.Tensor:
        outs = intermediates(x, return_prefix_tokens=True, output_fmt="NLC")
        if getattr(model, "num_prefix_tokens", 0) and getattr(model, "cls_token", None) is not None:
            return torch.cat([prefix[:, 0] for _, prefix in outs] + [outs[-1][0].mean(dim=1)], dim=1)
        return torch.cat([(o[0] if isinstance(o, tuple) else o).mean(dim=1) for o in outs], dim=1)

    return prefix_tokens


@torch.no_grad()
def extract(fn: Callable, loader, runtime) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) float16 features and (N,) labels of every sample of the loader, in its order."""
    feats, labels = [], []
    for x, y in loader:
        with runtime.autocast():
            feats.append(fn(x.to(runtime.device)).float().cpu().half())
        labels.append(torch.as_tensor(y).cpu().long())
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def cache_key(weights: str, layers: str, blocks: int, img_size: int) -> str:
    return f"{weights}_{layers}{blocks if layers == 'tokens' else ''}_{img_size}px"


def save_features(path: Path, fs: FeatureSet) -> None:


    buf = io.BytesIO()
    np.savez(buf, features=fs.features, labels=fs.labels, ids=np.asarray(fs.ids, dtype=str))
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def load_features(path: Path) -> FeatureSet:
    with np.load(path, allow_pickle=False) as z:
        return FeatureSet(z["features"], z["labels"].astype(np.int64), z["ids"].tolist())


def cached_features(cache_dir: Path, splits: dict[str, Any], fn: Callable, runtime, ids: Callable[[str], list[str]],
                    meta: dict[str, Any]) -> dict[str, FeatureSet]:
    """Features of each split, read from `cache_dir` when there, else extracted and written there."""
    out = {}
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / "key.json").write_text(json.dumps(meta, indent=1))
    for split, loader in splits.items():
        path = cache_dir / f"{split}.npz"
        if path.is_file():
            out[split] = load_features(path)
            continue
        if split == "train":  # every training sample once, in order, without augmentation
            loader.shuffle, loader.drop_last = False, False
        feats, labels = extract(fn, loader, runtime)
        out[split] = FeatureSet(feats, labels, ids(split))
        if len(out[split].ids) != len(labels):
            raise UserError(f"split {split}: {len(labels)} features but {len(out[split].ids)} sample ids")
        if not np.isfinite(feats).all():
            raise UserError(f"the features of split {split} are not finite (fp16 overflow?); use probe.layers=pooled")
        save_features(path, out[split])
        log.info(f"probe: {split} features {feats.shape} -> {path}")
    return out
