"""The tensors of an FSDP run's checkpoint, taken from and put back into its sharded parts.

Model and EMA weights are the modules' own state dicts (DTensor shards under FSDP2; a LoRA
model's adapters and head only, as models/lora.py decides); the optimizer state comes through
`torch.distributed.checkpoint.state_dict`, keyed by parameter name, so a checkpoint written by
one number of ranks loads into another (resharded). Everything else a checkpoint holds is JSON
(RunState.meta) and each rank's RNG streams (core/sharded.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitcli.core.rng import set_rng_state
from vitcli.core.runtime import Runtime
from vitcli.core.sharded import read_rng
from vitcli.models.lora import load_model_state, model_state_dict


def tensors(parts: Any) -> dict[str, Any]:
    """{"model", "optimizer", "model_ema"}: this rank's shards (and replicated plain tensors)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    from vitcli.launch.sharded_checkpoint import tensors_only

    out = {"model": model_state_dict(parts.model),
           "optimizer": tensors_only(get_optimizer_state_dict(parts.model, parts.optimizer))}
    if parts.ema is not None:
        out["model_ema"] = model_state_dict(parts.ema.module)
    return out


def restore(parts: Any, path: Path, runtime: Runtime, saved_world: int) -> None:
    """Load the checkpoint at `path` into the sharded parts (a collective), and this rank's RNG
    streams: its own when the world size is the one that wrote them, else rank 0's."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    from vitcli.launch.sharded_checkpoint import load

    template = load(path, tensors(parts))  # filled in place: the model's own shards among them
    load_model_state(parts.model, template["model"], str(path))
    if parts.ema is not None and "model_ema" in template:
        load_model_state(parts.ema.module, template["model_ema"], str(path))
    groups = get_optimizer_state_dict(parts.model, parts.optimizer)["param_groups"]
    set_optimizer_state_dict(parts.model, parts.optimizer, {"state": template["optimizer"]["state"],
                                                            "param_groups": groups})
    rank = runtime.rank if saved_world == runtime.world_size else 0
    rng = read_rng(path, rank)
    if rng is not None:
        set_rng_state(rng)
