"""Evaluation: top-1, top-5 and loss over a loader, optionally keeping the logits.

Test-time augmentation (tta=flip|multicrop) averages softmax probabilities over
views of each normalized batch; the logits it returns are then the log of the
averaged probabilities (softmax of them gives those probabilities back).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from vitcli.core.runtime import Runtime


def tta_views(x: torch.Tensor, tta: str, crop_fraction: float = 0.875) -> list[torch.Tensor]:
    """Views of a normalized NCHW batch: none (1), flip (2: + mirror), multicrop (7: + 4 corners and centre, resized)."""
    if tta == "none":
        return [x]
    views = [x, x.flip(-1)]
    if tta == "flip":
        return views
    h, w = x.shape[-2:]
    ch, cw = max(1, round(h * crop_fraction)), max(1, round(w * crop_fraction))
    top, left = (h - ch) // 2, (w - cw) // 2
    for y0, x0 in ((0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw), (top, left)):
        crop = x[..., y0 : y0 + ch, x0 : x0 + cw]
        views.append(F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False, antialias=False))
    return views


class EvalCounts(NamedTuple):
    """Exact running totals of an evaluation: what DDP sums over ranks and metrics are made of."""
    correct1: float
    correct5: float
    loss_sum: float
    count: float

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> "EvalCounts":
        return cls(*t.tolist())

    def metrics(self) -> dict[str, Any]:
        """top1 / top5 (%), mean loss and sample count."""
        n = int(self.count)
        return {"top1": 100.0 * int(self.correct1) / max(n, 1), "top5": 100.0 * int(self.correct5) / max(n, 1),
                "loss": self.loss_sum / max(n, 1), "samples": n}


def _forward(model, x: torch.Tensor, tta: str, crop_fraction: float, runtime: Runtime) -> torch.Tensor:
    outs = []
    for view in tta_views(x, tta, crop_fraction):
        with runtime.autocast():
            outs.append(model(view).float())
    if len(outs) == 1:
        return outs[0]
    probs = torch.stack([o.softmax(dim=1) for o in outs]).mean(dim=0)
    return probs.clamp_min(torch.finfo(torch.float32).tiny).log()


@torch.no_grad()
def evaluate(model, loader, runtime: Runtime, keep_logits: bool = False, tta: str = "none",
             crop_fraction: float = 0.875, stop: Callable[[int], None] | None = None,
             forwards: int = 0) -> dict[str, Any]:
    """Metrics over every sample of `loader` (labels < 0 are excluded from metrics), at the runtime's precision.

    Under DDP each rank evaluates its own shard and the exact counts are summed over ranks,
    so every sample counts once. With keep_logits the result also holds "logits" (N, C) and
    "labels" (N,) of this rank's shard, in loader order.

    Args:
        model: the model to score (put in eval mode here).
        loader: yields (inputs, labels) batches.
        runtime: device and precision (autocast) of the forward passes; DDP reduction.
        tta: none | flip | multicrop (averages softmax probabilities over views).
        stop: called with each batch's index before it; raises to end the evaluation early (the
            training loop's stop vote: a stop signal must not wait for a whole evaluation).
        forwards: under FSDP, the most batches any rank has: every forward gathers each unit's
            weights from all ranks, so a rank whose shard ran out runs (and discards) forwards on a
            blank batch until it has done as many as the others.
    """
    model.eval()
    device = runtime.device
    # running totals stay on the device (no sync per batch) until the end
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # EvalCounts fields
    all_logits, all_labels = [], []
    done, blank = 0, None
    for i, (x, y) in enumerate(loader):
        if stop is not None:
            stop(i)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = _forward(model, x, str(tta), crop_fraction, runtime)
        done, blank = i + 1, torch.zeros_like(x[:1])
        if keep_logits:
            all_logits.append(logits.cpu())
            all_labels.append(y.cpu())
        known = y >= 0
        logits_k, y_k = logits[known], y[known]
        if len(y_k) == 0:
            continue
        hits = logits_k.topk(min(5, logits.shape[1]), dim=1).indices.eq(y_k[:, None])
        totals += torch.stack([hits[:, 0].sum(), hits.any(dim=1).sum(),
                               F.cross_entropy(logits_k, y_k, reduction="sum"), known.sum()]).double()
    for _ in range(done, forwards):  # FSDP: the other ranks' forwards need this rank's shards
        _forward(model, blank if blank is not None else _blank(loader, device), str(tta), crop_fraction, runtime)
    counts = EvalCounts.from_tensor(runtime.all_reduce_sum(totals))
    out: dict[str, Any] = {**counts.metrics(), "counts": counts}
    if keep_logits:
        out["logits"] = torch.cat(all_logits) if all_logits else torch.empty(0)
        out["labels"] = torch.cat(all_labels) if all_labels else torch.empty(0, dtype=torch.long)
    return out


def _blank(loader, device: torch.device) -> torch.Tensor:
    """One blank input of the loader's shape, for a rank whose shard of the split is empty."""
    size = int(getattr(loader, "img_size", 0) or 32)
    return torch.zeros(1, 3, size, size, device=device)


def class_report(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """Confusion matrix (rows: true class, columns: predicted) and per-class support / accuracy."""
    from sklearn.metrics import confusion_matrix  # here: the training loop's evaluations do not need sklearn

    known = labels >= 0
    pred = logits[known].argmax(axis=1)
    cm = confusion_matrix(labels[known], pred, labels=np.arange(num_classes))
    support = cm.sum(axis=1)
    correct = np.diag(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(support > 0, 100.0 * correct / np.maximum(support, 1), np.nan)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    return {"confusion": cm, "support": support, "correct": correct, "accuracy": accuracy,
            "confused_with": off.argmax(axis=1), "confused_count": off.max(axis=1)}
