"""The frozen teacher of knowledge distillation: one model or an ensemble, each member with
the input pipeline it was trained with, loaded from a vitcli run dir or from a timm model
name plus a state dict file (distill.teacher / distill.teacher_weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from omegaconf import OmegaConf

from vitcli.core.errors import UserError
from vitcli.core.options import group_options, load_option
from vitcli.core.runtime import Runtime
from vitcli.core.schema import ModelConfig
from vitcli.data.module import class_difference
from vitcli.models.factory import classifier_name, classifier_names, create_model
from vitcli.models.run_model import load_run_model
from vitcli.models.weights import load_weights, read_state_dict

MODEL_PREFIX = "model:"


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


def load_teacher(dcfg: Any, cfg: Any, num_classes: int | None, runtime: Runtime,
                 mean: Sequence[float], std: Sequence[float], class_names: Sequence[str] | None = None) -> Teacher:
    """The teacher(s) of distill.teacher on the student's device; a run-dir teacher must have been
    trained on the student's class list (`class_names`: names and order), not only as many classes."""
    members = []
    for spec, weights in teacher_specs(dcfg):
        if spec.startswith(MODEL_PREFIX):
            member = load_model_teacher(spec, weights, cfg, num_classes, runtime.device, mean, std)
        elif weights:
            raise UserError(f"distill.teacher_weights={weights} only applies to model:NAME teachers; "
                            f"the run {spec} brings its own checkpoint")
        else:
            member = load_run_teacher(spec, dcfg, num_classes, runtime, class_names)
        members.append(member)
    return Teacher(members, mean, std).to(runtime.device)


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


def load_run_teacher(spec: str, dcfg: Any, num_classes: int | None, runtime: Runtime,
                     class_names: Sequence[str] | None = None) -> TeacherMember:
    """A finished vitcli run: its best (or last) checkpoint and its own data pipeline. Its recorded
    class names must be the student's: the same count in another order would teach wrong labels."""
    try:
        tcfg, model, state, _ = load_run_model(Path(spec), str(dcfg.teacher_checkpoint), runtime=runtime)
    except UserError as err:
        raise UserError(f"distill.teacher={spec}: {err}") from err
    check_classes(int(state["num_classes"]), num_classes, spec)
    recorded = state.get("class_names")
    problem = class_difference(recorded, class_names, "the student's data") if recorded and class_names else None
    if problem:
        raise UserError(f"distill.teacher={spec}: {problem}; its outputs would teach the wrong classes: distil from "
                        "a teacher trained on the student's class list (names and order)")
    size = fixed_input_size(model) or dcfg.teacher_img_size or int(tcfg.data.img_size)
    return TeacherMember(model, size, tcfg.data.mean, tcfg.data.std, name=spec)


def teacher_model_cfg(name: str, img_size: int) -> Any:
    """A model preset (resolved at img_size) or a bare timm name, as a ModelConfig."""


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

    head = classifier_name(model)
    keys = [k for k in state if k == f"{head}.weight" or (k.startswith(f"{head}.") and k.endswith(".weight"))]
    return int(state[keys[-1]].shape[0]) if keys else None


def _load_weights(model: nn.Module, model_cfg: Any, path: Path, num_classes: int, spec: str) -> None:
    """Every tensor of the teacher must come from the file (position embeddings / relative-position
    tables may be resampled to this input size by timm's checkpoint filter); the classifier too:
    a teacher with a re-initialised head would teach noise."""

    state = read_state_dict(path, "distill.teacher_weights")
    check_classes(_classifier_width(state, model), num_classes, f"{spec} ({path})")
    load_weights(model, path, "distill.teacher_weights", spec, classifier_names(model), reinit_classifier=False,
                 state=state)
