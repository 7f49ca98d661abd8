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
    (already smoothed) targets that MixUp/CutMix produce.

    `class_weights` (data.class_balance=weighted_loss) weight each class's term; the loss is
    the weighted mean (torch's CrossEntropyLoss rule), for soft targets too, so one-hot soft
    targets give the hard loss."""

    def __init__(self, label_smoothing: float = 0.0, class_weights: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.hard = nn.CrossEntropyLoss(label_smoothing=label_smoothing, weight=class_weights)

    def forward(self, inputs: torch.Tensor, outputs: Any, targets: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, (tuple, list)):  # DeiT distilled models in training mode: (cls, dist)
            outputs = outputs[0]
        if targets.ndim == 2:
            terms = -targets * torch.log_softmax(outputs, dim=-1)
            if self.class_weights is None:
                return torch.sum(terms, dim=-1).mean()
            w = self.class_weights.to(terms.dtype)
            return torch.sum(terms * w) / torch.sum(targets * w)
        return self.hard(outputs, targets)


def create_criterion(cfg: TrainConfig, **context: Any) -> nn.Module:
    """The train criterion for a config; `context` carries what distillation needs
    (runtime, num_classes, data mean/std, the student model) without widening this signature."""
    weights = None
    if str(cfg.data.get("class_balance", "none")) == "weighted_loss":
        from vitcli.data.balance import inverse_frequency_weights

        weights = torch.tensor(inverse_frequency_weights(context["class_counts"]), dtype=torch.float32)
        runtime = context.get("runtime")
        weights = weights.to(runtime.device) if runtime is not None else weights
    base = LabelLoss(cfg.regularization.label_smoothing, class_weights=weights)
    distill = cfg.get("distill")
    if distill is not None and distill.name != "none":
        return create_distill_criterion(cfg, base, **context)
    return base
