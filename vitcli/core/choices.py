"""Closed sets of strings that config fields take (precision, progress, head, scheduler, ...).

OmegaConf checks Enum-typed fields when a config is composed, so `trainer.precision=fp8`
fails before any work with Hydra's message listing the valid values. Members are also
strings (`Precision.bf16 == "bf16"`), so code compares and prints them as plain text.
"""

from __future__ import annotations

from enum import Enum, EnumMeta
from typing import Any


class _ChoiceMeta(EnumMeta):
    """Look members up by name or by value (Precision '32' is the member fp32)."""

    def __getitem__(cls, name: Any) -> Any:
        try:
            return super().__getitem__(name)
        except KeyError:
            for member in cls:
                if member.value == str(name):
                    return member
            raise


class Choice(str, Enum, metaclass=_ChoiceMeta):
    """A string choice: compares, prints and formats as its value, so code reads `precision == "bf16"`."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def _missing_(cls, value: Any) -> Any:  # trainer.precision=32 arrives as the int 32
        return next((m for m in cls if m.value == str(value)), None)


def _choice(name: str, values: list[str]) -> Any:
    """A Choice whose member names are its values."""
    return Choice(name, [(v, v) for v in values])


Strategy = _choice("Strategy", ["ddp", "fsdp"])
Precision = Choice("Precision", [("fp32", "32"), ("bf16", "bf16"), ("fp16", "fp16")])
Progress = _choice("Progress", ["auto", "bar", "plain", "none"])
Head = _choice("Head", ["linear", "mlp"])
DataFormat = _choice("DataFormat", ["auto", "files", "memory", "packed"])
ClassBalance = _choice("ClassBalance", ["none", "weighted_loss", "sampler"])
PrepareFormat = _choice("PrepareFormat", ["packed", "wds"])
LrBaseScale = _choice("LrBaseScale", ["linear", "sqrt"])
# timm create_scheduler_v2's names (tests/test_config.py checks timm accepts each)
Scheduler = _choice("Scheduler", ["cosine", "tanh", "step", "multistep", "plateau", "poly", "wsd", "rsqrt",
                                 "constant", "none"])
LoggerName = _choice("LoggerName", ["csv", "wandb", "mlflow", "tensorboard"])
WandbMode = _choice("WandbMode", ["auto", "online", "offline", "disabled"])
DistillName = _choice("DistillName", ["none", "soft", "hard", "token"])
DistillTarget = _choice("DistillTarget", ["soft", "hard"])
RunCheckpoint = _choice("RunCheckpoint", ["best", "last"])
Checkpoint = _choice("Checkpoint", ["best", "last", "ema"])
Tta = _choice("Tta", ["none", "flip", "multicrop"])
PeftMethod = _choice("PeftMethod", ["none", "lora"])
ProbeMethod = _choice("ProbeMethod", ["knn", "linear", "fewshot"])
ProbeLayers = _choice("ProbeLayers", ["pooled", "tokens"])
Calibrate = _choice("Calibrate", ["none", "temperature"])
Submission = _choice("Submission", ["auto", "always", "never"])
EnsembleMethod = _choice("EnsembleMethod", ["vote", "weighted_vote", "mean_prob", "mean_logit", "greedy"])
GreedyMetric = _choice("GreedyMetric", ["nll", "top1"])
MixupMode = _choice("MixupMode", ["batch", "pair", "elem"])
EraseMode = _choice("EraseMode", ["pixel", "rand", "const"])
ExportFormat = _choice("ExportFormat", ["timm", "onnx"])
ExplainMethod = _choice("ExplainMethod", ["auto", "rollout", "attention", "gradcam"])
Difficulty = _choice("Difficulty", ["hard", "easy"])
# data a run reads back differs from what its checkpoint records: strict stops, warn logs the line and goes on
DataCheck = _choice("DataCheck", ["strict", "warn"])
