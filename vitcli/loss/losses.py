"""Training criteria. Every criterion is called as criterion(inputs, outputs, targets),
DeiT's signature, so distillation can see the inputs it must show the teacher."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from vitcli.loss.distill import create_distill_criterion

if TYPE_CHECKING:
    from vitcli.core.schema import TrainConfig


class LabelLoss(nn.Module):
    """Cross-entropy on labels: hard targets with label smoothing, or the soft
    (already smoothed) targets that MixUp/CutMix produce."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.hard = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def forward(self, inputs: torch.Tensor, outputs: Any, targets: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, (tuple, list)):  # DeiT distilled models in training mode: (cls, dist)
            outputs = outputs[0]
        if targets.ndim == 2:
            return torch.sum(-targets * torch.log_softmax(outputs, dim=-1), dim=-1).mean()
        return self.hard(outputs, targets)


def create_criterion(cfg: TrainConfig, **context: Any) -> nn.Module:
    """The train criterion for a config; `context` carries what distillation needs
    (runtime, num_classes, data mean/std, the student model) without widening this signature."""
    base = LabelLoss(cfg.regularization.label_smoothing)
    distill = cfg.get("distill")
    if distill is not None and distill.name != "none":
        return create_distill_criterion(cfg, base, **context)
    return base
