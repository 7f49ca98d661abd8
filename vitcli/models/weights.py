"""Weights must fit: load a local state dict into a built model and say exactly what happened.

timm's own loader (`pretrained_cfg_overlay=dict(file=...)`) loads with strict=False and
only logs what it could not use, so a file of another architecture silently leaves the
model at its random initialisation. Here the comparison is done explicitly:

- the file is read with timm's `load_state_dict` (safetensors, or torch.load with
  weights_only=True, unwrapping `state_dict` / `model` entries);
- the model's own timm `checkpoint_filter_fn` adapts it (position embeddings, relative-
  position tables and patch embeddings resampled to this model's sizes);
- every tensor of the model is then loaded, resized, re-initialised (classifier only),
  missing, of another shape, or the file has keys the model does not know.

Anything but loaded / resized / classifier re-initialised is an error (one line), unless
`strict=False`, which loads what fits and warns with the counts.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from timm.models import load_state_dict

from vitcli.core.errors import UserError

log = logging.getLogger("vitcli")


def read_state_dict(path: Path, setting: str) -> dict[str, Any]:
    """The tensors of a .safetensors / .pth / .bin file; one-line UserError when unusable."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{setting}={path}: no such file (expected a .safetensors, .pth or .bin state dict)")
    if path.stat().st_size == 0:
        raise UserError(f"{setting}={path} is an empty file (expected a .safetensors, .pth or .bin state dict)")
    try:
        state = load_state_dict(str(path), device="cpu")
    except Exception as err:  # corrupt file, not a tensor file, pickle refused by weights_only, ...
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "weights_only" in reason or "Unpickl" in reason:
            reason = "it holds pickled Python objects, which are refused (re-save it as plain tensors)"
        else:
            reason = f"{type(err).__name__}: {reason[:200]}"
        raise UserError(f"{setting}={path} is not a readable state dict ({reason})") from err

    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{setting}={path} holds no state dict of tensors (expected a .safetensors, .pth or .bin file)")
    return state


@dataclass
class FitReport:
    """What happened to each tensor of the model."""
    total: int = 0
    loaded: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # "key file_shape vs model_shape"
    unexpected: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.mismatched or self.unexpected)

    def counts(self) -> str:
        parts = [f"{len(self.loaded)} of {self.total} tensors loaded"]
        for name, keys in (("resized", self.resized), ("re-initialised", self.reinitialised),
                           ("missing", self.missing), ("of another shape", self.mismatched),
                           ("unexpected in the file", self.unexpected)):
            if keys:
                parts.append(f"{len(keys)} {name}")
        return ", ".join(parts)


def _few(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def _filter(state: dict[str, Any], model) -> dict[str, Any]:
    """Run the model family's timm checkpoint_filter_fn (resamples sizes), if it has one."""
    fn = getattr(inspect.getmodule(type(model)), "checkpoint_filter_fn", None)
    if fn is None:
        return state
    try:
        return fn(dict(state), model)
    except Exception:  # a file of another family: compare it unfiltered, the report says why
        return state


def fit_state_dict(model, state: dict[str, Any], classifier: list[str], reinit_classifier: bool = True) -> tuple[FitReport, dict]:
    """Compare `state` with the model; return the report and the tensors that fit."""
    own = model.state_dict()
    filtered = _filter(state, model)
    head = tuple(f"{c}." for c in classifier)
    report, usable = FitReport(total=len(own)), {}
    for key, target in own.items():
        value = filtered.get(key)
        is_head = key.startswith(head)
        if value is None:
            (report.reinitialised if is_head and reinit_classifier else report.missing).append(key)
        elif tuple(value.shape) != tuple(target.shape):
            if is_head and reinit_classifier:
                report.reinitialised.append(key)
            else:
                report.mismatched.append(f"{key} {list(value.shape)} vs {list(target.shape)}")
        else:
            usable[key] = value
            original = state.get(key)
            resized = original is not None and tuple(original.shape) != tuple(value.shape)
            (report.resized if resized else report.loaded).append(key)
    report.unexpected = [k for k in filtered if k not in own]
    return report, usable


def load_weights(model, path: Path, setting: str, arch: str, classifier: list[str],
                 strict: bool = True, reinit_classifier: bool = True, strict_setting: str | None = None,
                 state: dict[str, Any] | None = None) -> FitReport:
    """Load `path` into `model` (see module docstring); log the report; UserError if it does not fit.

    Args:
        state: the file's tensors when the caller already read them (read_state_dict), else read here.
    """
    state = read_state_dict(path, setting) if state is None else state
    report, usable = fit_state_dict(model, state, classifier, reinit_classifier)
    fitted = len(report.loaded) + len(report.resized)
    if not report.ok:
        problems = "; ".join(f"{name} {_few(keys)}" for name, keys in (
            ("missing:", report.missing), ("other shape:", report.mismatched),
            ("unexpected:", report.unexpected)) if keys)
        if strict:
            if fitted == 0:
                raise UserError(f"{setting}={path} matched 0 of {report.total} tensors of {arch} (expected a {arch} "
                                f"state dict; got keys like {_few(list(state))})")
            hint = f"; {strict_setting}=false loads only what fits" if strict_setting else ""
            raise UserError(f"{setting}={path} does not fit {arch}: {report.counts()} ({problems}){hint}")
        log.warning(f"{setting}={path}: {report.counts()} ({problems}); the rest keeps its random initialisation "
                    "(weights_strict=false)")
    model.load_state_dict(usable, strict=False)
    if report.ok:
        log.info(f"{setting}={path}: {report.counts()}"
                 + (f" (resized: {_few(report.resized)})" if report.resized else "")
                 + (f" (re-initialised: {_few(report.reinitialised)})" if report.reinitialised else ""))
    return report
