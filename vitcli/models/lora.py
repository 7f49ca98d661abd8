"""LoRA fine-tuning through Hugging Face `peft` (the optional extra `peft`).

`model.peft=lora` wraps the built timm model with `peft.get_peft_model`: every module whose
dotted name ends with one of `model.lora.targets` (default: its family's, models/families.py)
gets a low-rank adapter, the classifier is trained in full (peft's `modules_to_save`) and
everything else is frozen. A run's checkpoints then hold only the adapters and the head
(`adapter_state_dict`) plus a hash of the frozen base weights, which are rebuilt from the
run's config (hub weights, `model.weights`, or a random init drawn from `trainer.seed`) and
must hash the same, at every load and at resume (`check_base_hash`). For inference and export the
adapters are merged into the base weights (`merge_lora`), which leaves a plain timm model.

The frozen base's normalisation layers that keep running statistics (BatchNorm in CNNs) stay in
eval mode while the adapters train (`freeze_norm_statistics`): their statistics are part of the
base the checkpoint's hash certifies, so training, resume, eval and the merged export all normalise
with the same (pretrained) statistics, which no adapter-only checkpoint would otherwise carry.
"""

from __future__ import annotations

import copy
import hashlib
from contextlib import contextmanager
from typing import Any, Iterator

import torch

from vitcli.core.errors import UserError, install_hint
from vitcli.models.families import model_family

_ADAPTER_MARKERS = (".lora_", ".modules_to_save.")


def lora_targets(model, targets: Any, preset: str) -> list[str]:
    """`model.lora.targets`, or the model family's defaults when it is null."""
    if targets:
        return [str(t) for t in targets]
    family = model_family(model)
    if family is None or family.lora_targets is None:
        raise UserError(f"model.peft=lora: model={preset} ({type(model).__name__}) has no default LoRA targets; "
                        "set model.lora.targets=[...] to the names (or name endings) of its Linear/Conv modules")
    return list(family.lora_targets)


def apply_lora(model, lora_cfg: Any, preset: str, classifiers: list[str]):
    """Wrap a timm model with LoRA adapters; only the adapters and the classifier(s) stay trainable.

    Args:
        model: the built timm model (classifier already sized for the data).
        lora_cfg: `model.lora` (r, alpha, dropout, targets).
        preset: the model preset's name, for messages.
        classifiers: dotted names of the classifier modules (trained in full).
    Returns:
        a `peft.PeftModel` whose forward, forward_features and forward_head are the timm model's.

    >>> import timm
    >>> from types import SimpleNamespace
    >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=3)
    >>> lora = apply_lora(vit, SimpleNamespace(r=4, alpha=8, dropout=0.0, targets=None), "vit_t", ["head"])
    >>> trainable_params(lora) < count(lora) // 20
    True
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:
        raise UserError(f"model.peft=lora needs the peft package: {install_hint('peft')}") from err

    if lora_cfg.r < 1 or lora_cfg.alpha <= 0 or not 0.0 <= lora_cfg.dropout < 1.0:
        raise UserError(f"model.lora: r={lora_cfg.r} must be >= 1, alpha={lora_cfg.alpha} > 0 and "
                        f"dropout={lora_cfg.dropout} in [0, 1)")
    targets = lora_targets(model, lora_cfg.targets, preset)
    config = LoraConfig(r=int(lora_cfg.r), lora_alpha=float(lora_cfg.alpha), lora_dropout=float(lora_cfg.dropout),
                        target_modules=targets, modules_to_save=list(classifiers))
    try:
        return get_peft_model(model, config)
    except ValueError as err:  # peft: "Target modules {...} not found in the base model"
        raise UserError(f"model.lora.targets={targets} matched no module of model={preset} that LoRA can adapt "
                        f"({str(err).splitlines()[0][:160]})") from err


def is_lora(model) -> bool:
    return type(model).__name__ == "PeftModel" or hasattr(model, "peft_config")


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def trainable_params(model) -> int:
    """Parameters the optimizer updates (all of them for full fine-tuning)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _is_adapter_key(name: str) -> bool:
    return any(marker in name for marker in _ADAPTER_MARKERS)


def adapter_state_dict(model) -> dict[str, torch.Tensor]:
    """The tensors a LoRA run trains: adapters and the classifier copy (peft's names)."""
    return {k: v for k, v in model.state_dict().items() if _is_adapter_key(k)}


def base_hash(model) -> str:
    """A hash of a LoRA model's frozen base weights (names, shapes and bytes), checked on every load."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        if _is_adapter_key(name):
            continue
        # FSDP: hash the whole tensor (gathered, one at a time), so any number of ranks hashes alike
        t = (tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor).detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-d too
    return digest.hexdigest()


def model_state_dict(model) -> dict[str, torch.Tensor]:
    """What a checkpoint stores of a model: the adapters and head of a LoRA model, else everything."""
    return adapter_state_dict(model) if is_lora(model) else model.state_dict()


def load_model_state(model, state: dict[str, torch.Tensor], where: str = "checkpoint") -> None:
    """Load `model_state_dict` output back; a LoRA model must receive every adapter tensor and nothing else."""
    if not is_lora(model):
        model.load_state_dict(state)
        return
    expected = set(adapter_state_dict(model))
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        detail = f"missing {missing[:2]}" if missing else f"unexpected {unexpected[:2]}"
        raise UserError(f"{where} does not hold this model's LoRA adapters ({detail}); was it trained with the same "
                        "model.peft / model.lora settings?")
    model.load_state_dict(state, strict=False)


def check_base_hash(expected: str | None, actual: str, where: str) -> None:
    """Stop when a LoRA model's rebuilt base (`actual`: its base_hash) differs from the one its checkpoint's
    adapters were trained on (`expected`: the checkpoint's lora_base_hash; None before it was recorded)."""
    if expected and actual != expected:
        raise UserError(f"{where}: the base weights rebuilt from the run's config.yaml (model.pretrained, "
                        "model.weights, trainer.seed) differ from those its LoRA adapters were trained on; restore "
                        "the original weights file or settings, or train into a new run dir")


def freeze_norm_statistics(model) -> list[str]:
    """Put the frozen normalisation layers with running statistics (BatchNorm; none in ViTs, whose
    LayerNorms keep no statistics) in eval mode, after `model.train()`; returns their names.

    A frozen layer is one none of whose own parameters trains (so a BatchNorm inside the trained
    classifier copy keeps learning its statistics)."""
    frozen = []
    for name, module in model.named_modules():
        if not getattr(module, "track_running_stats", False) or getattr(module, "running_mean", None) is None:
            continue
        if not any(p.requires_grad for p in module.parameters(recurse=False)):
            module.eval()
            frozen.append(name)
    return frozen


def merge_lora(model):
    """A plain timm model with the adapters merged into its weights (the LoRA model is left as it is)."""
    if not is_lora(model):
        return model
    return copy.deepcopy(model).merge_and_unload()


@contextmanager
def seeded_init(seed: int | None) -> Iterator[None]:
    """Build a LoRA run's base model from its own seed, whatever the RNGs did before, and leave them as
    they were: adapter-only checkpoints rely on the same random base being rebuilt on every load."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield

