"""Evaluation: top-1, top-5 and loss over a loader, optionally keeping the logits."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate(model, loader, device: torch.device, keep_logits: bool = False, autocast: Any = None) -> dict[str, Any]:
    """Metrics over every sample of `loader` (labels < 0 are excluded from metrics)."""
    model.eval()
    correct1 = correct5 = 0
    loss_sum = 0.0
    count = 0
    all_logits = []
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if autocast is not None:
            with autocast():
                logits = model(x)
        else:
            logits = model(x)
        logits = logits.float()
        if keep_logits:
            all_logits.append(logits.cpu())
        known = y >= 0
        if not known.any():
            continue
        logits_k, y_k = logits[known], y[known]
        loss_sum += F.cross_entropy(logits_k, y_k, reduction="sum").item()
        k = min(5, logits.shape[1])
        topk = logits_k.topk(k, dim=1).indices
        hits = topk.eq(y_k[:, None])
        correct1 += hits[:, 0].sum().item()
        correct5 += hits.any(dim=1).sum().item()
        count += int(known.sum())
    out: dict[str, Any] = {
        "top1": 100.0 * correct1 / max(count, 1),
        "top5": 100.0 * correct5 / max(count, 1),
        "loss": loss_sum / max(count, 1),
        "samples": count,
    }
    if keep_logits:
        out["logits"] = torch.cat(all_logits) if all_logits else torch.empty(0)
    return out
