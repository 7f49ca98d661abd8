"""A trained run's model, loaded back for inference: its config, checkpoint (best | last | ema),
weights and precision. Distillation teachers, eval, predict, explain and export all load runs here.

The checkpoint dict handed back carries `checkpoint_key` and `checkpoint_name` (not stored in the
file): the content key of the weights used (core/checkpoint.py `file_key`, `:ema` for the EMA
copy), which calibration.json and predictions/<split>.npz are keyed to, and how messages name them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitcli.core import runs
from vitcli.core.checkpoint import best_entry, file_key, load_checkpoint
from vitcli.core.sharded import is_sharded, read_state_json
from vitcli.core.errors import UserError
from vitcli.core.runtime import Runtime
from vitcli.models.factory import create_model
from vitcli.models.lora import base_hash, check_base_hash, load_model_state, merge_lora


def checkpoint_file(run_dir: Path, checkpoint: str) -> tuple[Path, str]:
    """(the file, the entry holding the weights) for best | last | ema. EMA weights travel inside
    best.pt, else last.pt, as "model_ema"; best.pt says which entry is the best (core/checkpoint.py
    best_entry). Looked up with a memory-mapped load: no weights read."""
    if checkpoint == "last":
        return runs.require_checkpoint(run_dir, checkpoint), "model"
    if checkpoint == "best":
        path = runs.require_checkpoint(run_dir, checkpoint)
        return path, best_entry(_peek(path))
    for which in ("best", "last"):
        path = runs.checkpoint_path(run_dir, which)
        if path.exists() and _peek(path).get("model_ema"):
            return path, "model_ema"
    raise UserError(f"{run_dir} has no EMA weights (train with EMA enabled, or use checkpoint=best or checkpoint=last)")


def _peek(path: Path) -> dict[str, Any]:
    """A checkpoint's entries without reading its weights (a .pt memory-mapped; a sharded one's state.json)."""
    if not is_sharded(path):
        return load_checkpoint(path, mmap=True)
    meta = read_state_json(path)  # the tensors stay in the shards: state.json lists their entries
    return {**meta, **{entry: True for entry in meta.get("entries", [])}}


def checkpoint_key(run_dir: str | Path, checkpoint: str = "best") -> str:
    """The content key of a run's best | last | ema weights (what its predictions and temperature match)."""
    path, entry = checkpoint_file(Path(run_dir), str(checkpoint))
    return file_key(path) + (":ema" if entry == "model_ema" else "")


def _load_state(run_dir: Path, checkpoint: str) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """(checkpoint path, full checkpoint dict with its checkpoint_key, the model state dict to load)."""
    path, entry = checkpoint_file(run_dir, checkpoint)
    state = load_checkpoint(path, map_location="cpu")
    ema = entry == "model_ema"
    state["checkpoint_key"] = file_key(path) + (":ema" if ema else "")
    state["checkpoint_name"] = f"{path}" + (" (its EMA weights)" if ema else "")  # for messages
    return path, state, state[entry]


def load_run_model(run_dir: Path, checkpoint: str = "best", device: str = "auto", precision: Any = None,
                   runtime: Runtime | None = None, merge: bool = True) -> tuple[Any, Any, dict[str, Any], Runtime]:
    """A trained run's model, ready for inference.

    Args:
        run_dir: the run directory (config.yaml + checkpoints/).
        checkpoint: best | last | ema.
        device: where to run it (auto: a GPU when one is visible).
        precision: null: the precision the run trained with (so eval equals its summary); 32 | bf16 | fp16.
        runtime: an existing runtime to share (a distillation teacher runs on its student's).
        merge: LoRA runs: merge the adapters into the base weights (a plain timm model; false keeps peft's model).
    Returns:
        (the run's config, the model in eval mode on the runtime's device, the checkpoint dict, the runtime).
    """
    run_dir = runs.require_run_dir(run_dir)
    cfg = runs.load_run_config(run_dir)
    path, state, weights = _load_state(run_dir, str(checkpoint))
    if runtime is None:
        runtime = Runtime.create(device, cfg.trainer.precision if precision is None else precision)
    if str(cfg.model.get("peft", "none")) == "lora":
        model = _load_lora(cfg, state, weights, path, merge)
        return cfg, model.to(runtime.device).eval(), state, runtime
    cfg.model.weights = None  # the checkpoint supplies every weight
    cfg.model.pretrained = False
    model = create_model(cfg.model, int(state["num_classes"]), cfg.regularization)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise UserError(f"{path} does not fit the model in {run_dir}/config.yaml ({str(err).splitlines()[0]})") from err
    return cfg, model.to(runtime.device).eval(), state, runtime


def _load_lora(cfg: Any, state: dict[str, Any], weights: dict[str, Any], path: Path, merge: bool):
    """A LoRA run's model: the base rebuilt from its config and seed, checked against the hash its
    checkpoint recorded, the adapters and head loaded, and (merge) folded into a plain timm model."""

    model = create_model(cfg.model, int(state["num_classes"]), cfg.regularization, seed=int(cfg.trainer.seed))
    check_base_hash(state.get("lora_base_hash"), base_hash(model), str(path))
    load_model_state(model, weights, str(path))
    return merge_lora(model) if merge else model
