"""Knowledge distillation, DeiT-style (Touvron et al., ICML 2021).

A frozen teacher (a vitcli run, a timm model with a weights file, or an ensemble
of them) sees the student's augmented batch, MixUp/CutMix included, re-normalized
and resized to its own input pipeline. The student learns from both:

    loss = (1 - alpha) * labels(cls_logits) + alpha * D(dist_logits, teacher)

D is tau^2 * KL(teacher || student) at temperature tau (target=soft) or the
cross-entropy on the teacher's argmax (target=hard, DeiT's hard distillation).
A plain student uses its one output for both terms; a DeiT distilled student
(distill=token) gives the class head the labels and the distillation head the
teacher, and timm averages the two heads at eval.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from vitcli.core.errors import UserError
from vitcli.core.runtime import Runtime
from vitcli.loss.teacher import Teacher, load_teacher


# ---- the distillation terms ---------------------------------------------------------
def soft_distill_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, tau: float) -> torch.Tensor:
    """tau^2 * KL(teacher || softmax(student / tau)), averaged over the batch (Hinton et al.)."""
    log_q = F.log_softmax(student_logits.float() / tau, dim=-1)
    return F.kl_div(log_q, teacher_probs.float(), reduction="batchmean") * (tau * tau)


def hard_distill_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the teacher's top class (DeiT's hard distillation)."""
    return F.cross_entropy(student_logits.float(), teacher_probs.argmax(dim=-1))


# ---- the criterion --------------------------------------------------------------------
class DistillLoss(nn.Module):
    """criterion(inputs, outputs, targets): (1 - alpha) * label loss + alpha * distillation term."""

    def __init__(self, base: nn.Module, teacher: Teacher, target: str = "soft", alpha: float = 0.5,
                 tau: float = 1.0, token: bool = False, runtime: Runtime | None = None):
        super().__init__()
        self.base, self.teacher = base, teacher
        self.target, self.alpha, self.tau, self.token = str(target), float(alpha), float(tau), token
        self.runtime = runtime or Runtime(torch.device("cpu"))
        self._reset()

    def _reset(self) -> None:
        self._steps, self._cpu_ms, self._events, self._distill_sum = 0, 0.0, [], None

    def teacher_probs(self, inputs: torch.Tensor) -> torch.Tensor:
        tau = self.tau if self.target == "soft" else 1.0
        if inputs.is_cuda:  # CUDA events time the teacher without stalling the stream
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        else:
            t0 = time.perf_counter()
        with torch.no_grad(), self.runtime.autocast():
            probs = self.teacher.probs(inputs.detach(), tau)
        if inputs.is_cuda:
            end.record()
            self._events.append((start, end))
        else:
            self._cpu_ms += (time.perf_counter() - t0) * 1000.0
        self._steps += 1
        return probs

    def forward(self, inputs: torch.Tensor, outputs: Any, targets: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, (tuple, list)):
            cls_logits, dist_logits = outputs
        elif self.token:
            raise UserError("distill=token: the student returned one output, not (class, distillation) logits; "
                            "use a distilled model such as model=deit_t_distilled")
        else:
            cls_logits = dist_logits = outputs
        label_loss = self.base(inputs, cls_logits, targets)
        probs = self.teacher_probs(inputs)
        if self.target == "soft":
            distill = soft_distill_loss(dist_logits, probs, self.tau)
        else:
            distill = hard_distill_loss(dist_logits, probs)
        d = distill.detach()
        self._distill_sum = d if self._distill_sum is None else self._distill_sum + d
        return (1.0 - self.alpha) * label_loss + self.alpha * distill

    def epoch_stats(self) -> dict[str, float]:
        """Teacher cost and the mean distillation term since the last call (one epoch)."""
        if not self._steps:
            return {}
        ms = self._cpu_ms
        if self._events:
            torch.cuda.synchronize()
            ms += sum(s.elapsed_time(e) for s, e in self._events)
        stats = {"teacher_ms_per_step": ms / self._steps, "distill_loss": float(self._distill_sum) / self._steps}
        self._reset()
        return stats


# ---- building it from a config -------------------------------------------------------
def create_distill_criterion(cfg: Any, base: nn.Module, runtime: Runtime | None = None, num_classes: int | None = None,
                             mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                             model: nn.Module | None = None, class_names: Sequence[str] | None = None,
                             **_: Any) -> DistillLoss:
    """The distillation criterion for cfg.distill; `model` (the student) is needed for distill=token.

    Args:
        runtime: the student's device and precision; the teacher runs there, under the same autocast.
        class_names: the student's classes; a run-dir teacher trained on another list is refused.
    """
    runtime = runtime or Runtime(torch.device("cpu"))
    dcfg = cfg.distill
    validate(dcfg)
    token = dcfg.name == "token"
    if token:
        enable_distillation_token(model, cfg.model.name)
    mean = list(mean if mean is not None else cfg.data.mean)
    std = list(std if std is not None else cfg.data.std)
    teacher = load_teacher(dcfg, cfg, num_classes, runtime, mean, std, class_names)
    return DistillLoss(base, teacher, dcfg.target, dcfg.alpha, dcfg.tau, token=token, runtime=runtime)


def validate(dcfg: Any) -> None:
    """Ranges the schema cannot express (its Enums already fixed distill.name and distill.target)."""
    if not 0.0 <= dcfg.alpha <= 1.0:
        raise UserError(f"distill.alpha={dcfg.alpha} must lie in [0, 1] (the teacher's share of the loss)")
    if dcfg.tau <= 0:
        raise UserError(f"distill.tau={dcfg.tau} must be positive")


def enable_distillation_token(model: nn.Module | None, preset: str) -> None:
    """DeiT distilled models return (cls, dist) logits in train mode once this is set."""
    if model is None:
        raise UserError("distill=token needs the student model passed to create_criterion(model=...)")
    if not hasattr(model, "set_distilled_training"):
        raise UserError(f"distill=token needs a student with a distillation token, but model={preset} has none; "
                        "use model=deit_t_distilled or deit_s_distilled, or distill=soft / distill=hard")
    model.set_distilled_training(True)
