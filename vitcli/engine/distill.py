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

import contextlib
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from vitcli.errors import UserError

MODEL_PREFIX = "model:"
NAMES = ("soft", "hard", "token")
TARGETS = ("soft", "hard")


# ---- the distillation terms ---------------------------------------------------------
def soft_distill_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, tau: float) -> torch.Tensor:
    """tau^2 * KL(teacher || softmax(student / tau)), averaged over the batch (Hinton et al.)."""
    log_q = F.log_softmax(student_logits.float() / tau, dim=-1)
    return F.kl_div(log_q, teacher_probs.float(), reduction="batchmean") * (tau * tau)


def hard_distill_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the teacher's top class (DeiT's hard distillation)."""
    return F.cross_entropy(student_logits.float(), teacher_probs.argmax(dim=-1))


# ---- the teacher ----------------------------------------------------------------------
def _rgb(values: Sequence[float]) -> torch.Tensor:
    return torch.tensor([float(v) for v in values], dtype=torch.float32).view(1, 3, 1, 1)


class TeacherMember(nn.Module):
    """One frozen model plus the input pipeline it was trained with (size, mean, std)."""

    def __init__(self, model: nn.Module, img_size: int | None, mean: Sequence[float], std: Sequence[float],
                 name: str = "teacher"):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.img_size = img_size
        self.name = name
        self.mean_list, self.std_list = [float(v) for v in mean], [float(v) for v in std]
        self.register_buffer("mean", _rgb(mean), persistent=False)
        self.register_buffer("std", _rgb(std), persistent=False)

    def adapt(self, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, same_norm: bool) -> torch.Tensor:
        """The student's normalized batch -> this teacher's normalized input."""
        resize = self.img_size is not None and tuple(x.shape[-2:]) != (self.img_size, self.img_size)
        if same_norm and not resize:
            return x
        x = x.float() * std + mean  # back to [0, 1] pixels
        if resize:
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False,
                              antialias=self.img_size < x.shape[-1])
        return (x - self.mean) / self.std


class Teacher(nn.Module):
    """Frozen teacher(s); an ensemble averages the members' probabilities."""

    def __init__(self, members: Sequence[TeacherMember], student_mean: Sequence[float], student_std: Sequence[float]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.register_buffer("student_mean", _rgb(student_mean), persistent=False)
        self.register_buffer("student_std", _rgb(student_std), persistent=False)
        s_mean, s_std = [float(v) for v in student_mean], [float(v) for v in student_std]
        self.same_norm = [m.mean_list == s_mean and m.std_list == s_std for m in members]
        self.eval()

    def train(self, mode: bool = True) -> "Teacher":
        return super().train(False)  # a teacher never leaves eval mode (BN stats, dropout)

    @torch.no_grad()
    def probs(self, x: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
        total = None
        for member, same in zip(self.members, self.same_norm):
            logits = member.model(member.adapt(x, self.student_mean, self.student_std, same))
            p = F.softmax(logits.float() / tau, dim=-1)
            total = p if total is None else total + p
        return total / len(self.members)


# ---- the criterion --------------------------------------------------------------------
class DistillLoss(nn.Module):
    """criterion(inputs, outputs, targets): (1 - alpha) * label loss + alpha * distillation term."""

    def __init__(self, base: nn.Module, teacher: Teacher, target: str = "soft", alpha: float = 0.5,
                 tau: float = 1.0, token: bool = False, autocast: Callable[[], Any] | None = None):
        super().__init__()
        self.base, self.teacher = base, teacher
        self.target, self.alpha, self.tau, self.token = target, float(alpha), float(tau), token
        self.autocast = autocast or contextlib.nullcontext
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
        with torch.no_grad(), self.autocast():
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
def create_distill_criterion(cfg: Any, base: nn.Module, device: Any = "cpu", num_classes: int | None = None,
                             mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                             autocast: Callable[[], Any] | None = None, model: nn.Module | None = None,
                             **_: Any) -> DistillLoss:
    """The distillation criterion for cfg.distill; `model` (the student) is needed for distill=token."""
    dcfg = cfg.distill
    validate(dcfg)
    token = dcfg.name == "token"
    if token:
        enable_distillation_token(model, cfg.model.name)
    mean = list(mean if mean is not None else cfg.data.mean)
    std = list(std if std is not None else cfg.data.std)
    teacher = load_teacher(dcfg, cfg, num_classes, torch.device(device), mean, std)
    return DistillLoss(base, teacher, dcfg.target, dcfg.alpha, dcfg.tau, token=token, autocast=autocast)


def validate(dcfg: Any) -> None:
    if dcfg.name not in NAMES:
        raise UserError(f"distill={dcfg.name} is not one of none, {', '.join(NAMES)}")
    if dcfg.target not in TARGETS:
        raise UserError(f"distill.target={dcfg.target} is not one of {', '.join(TARGETS)}")
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


# ---- loading the teacher --------------------------------------------------------------
def teacher_specs(dcfg: Any) -> list[tuple[str, str | None]]:
    """(teacher, weights file) pairs from distill.teacher / distill.teacher_weights."""
    teachers, weights = dcfg.teacher, dcfg.teacher_weights
    if isinstance(teachers, str):
        teachers, weights = [teachers], [weights]
    else:
        teachers = [str(t) for t in (teachers or [])]
        if weights is None:
            weights = [None] * len(teachers)
        elif isinstance(weights, str) or len(weights) != len(teachers):
            raise UserError(f"distill.teacher lists {len(teachers)} teachers, so distill.teacher_weights must be a "
                            "list as long (null for run dirs)")
    if not teachers or not all(teachers):
        raise UserError(f"distill={dcfg.name} needs distill.teacher=RUN_DIR, model:NAME with "
                        "distill.teacher_weights=FILE, or a list of them ([RUN_A,RUN_B] averages their probabilities)")
    return [(t, None if w is None else str(w)) for t, w in zip(teachers, weights)]


def load_teacher(dcfg: Any, cfg: Any, num_classes: int | None, device: torch.device,
                 mean: Sequence[float], std: Sequence[float]) -> Teacher:
    members = []
    for spec, weights in teacher_specs(dcfg):
        if spec.startswith(MODEL_PREFIX):
            member = load_model_teacher(spec, weights, cfg, num_classes, device, mean, std)
        elif weights:
            raise UserError(f"distill.teacher_weights={weights} only applies to model:NAME teachers; "
                            f"the run {spec} brings its own checkpoint")
        else:
            member = load_run_teacher(spec, dcfg, num_classes, device)
        members.append(member)
    return Teacher(members, mean, std).to(device)


def check_classes(teacher_classes: int | None, num_classes: int | None, spec: str) -> None:
    if teacher_classes is not None and num_classes is not None and teacher_classes != num_classes:
        raise UserError(f"distill.teacher={spec} predicts {teacher_classes} classes but the data has {num_classes}; "
                        "teacher and student must share the class list")


def fixed_input_size(model: nn.Module) -> int | None:
    """The input size a ViT-like model insists on (None for CNNs, which take any size)."""
    pe = getattr(model, "patch_embed", None)
    if pe is not None and getattr(pe, "strict_img_size", False) and getattr(pe, "img_size", None):
        return int(pe.img_size[0])
    return None


def load_run_teacher(spec: str, dcfg: Any, num_classes: int | None, device: torch.device) -> TeacherMember:
    """A finished vitcli run: its best (or last) checkpoint and its own data pipeline."""
    from vitcli.engine.inference import load_run_model

    try:
        tcfg, model, state, _ = load_run_model(Path(spec), dcfg.teacher_checkpoint, str(device))
    except UserError as err:
        raise UserError(f"distill.teacher={spec}: {err}") from err
    check_classes(int(state["num_classes"]), num_classes, spec)
    size = fixed_input_size(model) or dcfg.teacher_img_size or int(tcfg.data.img_size)
    return TeacherMember(model, size, tcfg.data.mean, tcfg.data.std, name=spec)


def teacher_model_cfg(name: str, img_size: int) -> Any:
    """A model preset (resolved at img_size) or a bare timm name, as a ModelConfig."""
    from omegaconf import OmegaConf

    from vitcli.config import ModelConfig
    from vitcli.presets import group_options, load_option

    schema = OmegaConf.structured(ModelConfig)
    if name in group_options("model"):
        root = OmegaConf.create({"model": load_option("model", name), "data": {"img_size": img_size}})
        OmegaConf.resolve(root)
        cfg = OmegaConf.merge(schema, root.model)
    else:
        cfg = OmegaConf.merge(schema, {"name": name, "timm_name": name})
    cfg.pretrained, cfg.weights = False, None  # the teacher's weights come from distill.teacher_weights
    return cfg


def load_model_teacher(spec: str, weights: str | None, cfg: Any, num_classes: int | None, device: torch.device,
                       mean: Sequence[float], std: Sequence[float]) -> TeacherMember:
    """model:<preset or timm name> with a state dict file; it sees the student's normalization."""
    from vitcli.models import create_model

    name = spec[len(MODEL_PREFIX):]
    if not weights:
        raise UserError(f"distill.teacher={spec} needs distill.teacher_weights=FILE (a state dict with the data's "
                        "classes, e.g. a run's model.safetensors); for a vitcli run pass its directory instead")
    model_cfg = teacher_model_cfg(name, int(cfg.distill.teacher_img_size or cfg.data.img_size))
    if num_classes is None:
        raise UserError(f"distill.teacher={spec}: the data's class count is unknown")
    model = create_model(model_cfg, num_classes)
    _load_weights(model, model_cfg, Path(weights).expanduser(), num_classes, spec)
    size = fixed_input_size(model) or cfg.distill.teacher_img_size
    return TeacherMember(model.to(device), size, mean, std, name=spec)


def _classifier_width(state: dict, model: nn.Module) -> int | None:
    from vitcli.models import classifier_name

    head = classifier_name(model)
    keys = [k for k in state if k == f"{head}.weight" or (k.startswith(f"{head}.") and k.endswith(".weight"))]
    return int(state[keys[-1]].shape[0]) if keys else None


def _load_weights(model: nn.Module, model_cfg: Any, path: Path, num_classes: int, spec: str) -> None:
    """Every tensor of the teacher must come from the file (position embeddings / relative-position
    tables may be resampled to this input size by timm's checkpoint filter); the classifier too:
    a teacher with a re-initialised head would teach noise."""
    from vitcli.models import classifier_names
    from vitcli.weights import load_weights, read_state_dict

    state = read_state_dict(path, "distill.teacher_weights")
    check_classes(_classifier_width(state, model), num_classes, f"{spec} ({path})")
    load_weights(model, path, "distill.teacher_weights", spec, classifier_names(model), reinit_classifier=False)
