"""Evaluation: top-1, top-5 and loss over a loader, optionally keeping the logits.

Test-time augmentation (tta=flip|multicrop) averages softmax probabilities over
views of each normalized batch; the logits it returns are then the log of the
averaged probabilities (softmax of them gives those probabilities back).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

TTA_MODES = ("none", "flip", "multicrop")


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


def _forward(model, x: torch.Tensor, tta: str, crop_fraction: float, autocast: Any) -> torch.Tensor:
    outs = []
    for view in tta_views(x, tta, crop_fraction):
        if autocast is not None:
            with autocast():
                outs.append(model(view).float())
        else:
            outs.append(model(view).float())
    if len(outs) == 1:
        return outs[0]
    probs = torch.stack([o.softmax(dim=1) for o in outs]).mean(dim=0)
    return probs.clamp_min(torch.finfo(torch.float32).tiny).log()


@torch.no_grad()
def evaluate(model, loader, device: torch.device, keep_logits: bool = False, autocast: Any = None,
             tta: str = "none", crop_fraction: float = 0.875) -> dict[str, Any]:
    """Metrics over every sample of `loader` (labels < 0 are excluded from metrics).

    With keep_logits the result also holds "logits" (N, C) and "labels" (N,) in loader order.
    """
    if tta not in TTA_MODES:
        from vitcli.errors import UserError

        raise UserError(f"eval.tta={tta} is not one of {', '.join(TTA_MODES)}")
    model.eval()
    # running sums stay on the device (no sync per batch); metrics_from_sums turns them into
    # percentages, and DDP all-reduces the same sums (engine/distributed.py)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # correct1, correct5, loss_sum, count
    all_logits, all_labels = [], []
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = _forward(model, x, tta, crop_fraction, autocast)
        if keep_logits:
            all_logits.append(logits.cpu())
            all_labels.append(y.cpu())
        known = y >= 0
        logits_k, y_k = logits[known], y[known]
        if len(y_k) == 0:
            continue
        hits = logits_k.topk(min(5, logits.shape[1]), dim=1).indices.eq(y_k[:, None])
        sums += torch.stack([hits[:, 0].sum(), hits.any(dim=1).sum(),
                             F.cross_entropy(logits_k, y_k, reduction="sum"), known.sum()]).double()
    # "sums" (plain floats) lets DDP all-reduce exact counts instead of re-deriving them from percentages
    out: dict[str, Any] = {**metrics_from_sums(sums), "sums": sums.tolist()}
    if keep_logits:
        out["logits"] = torch.cat(all_logits) if all_logits else torch.empty(0)
        out["labels"] = torch.cat(all_labels) if all_labels else torch.empty(0, dtype=torch.long)
    return out


def metrics_from_sums(sums: Any) -> dict[str, Any]:
    """top1 / top5 (%), mean loss and sample count from (correct1, correct5, loss_sum, count)."""
    correct1, correct5, loss_sum, count = sums.tolist() if torch.is_tensor(sums) else sums
    count = int(count)
    return {"top1": 100.0 * int(correct1) / max(count, 1), "top5": 100.0 * int(correct5) / max(count, 1),
            "loss": loss_sum / max(count, 1), "samples": count}


def class_report(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """Confusion matrix (rows: true class, columns: predicted) and per-class support / accuracy."""
    from sklearn.metrics import confusion_matrix

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
