"""Loading a trained run back: its config, data, model and checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitcli import runs
from vitcli.errors import UserError


def load_run_model(run_dir: Path, checkpoint: str = "best", device: str = "auto"):
    """(cfg, model in eval mode on device, checkpoint state, device) for a run directory."""
    from vitcli.engine.checkpoint import load_checkpoint
    from vitcli.engine.trainer import resolve_device
    from vitcli.models import create_model

    run_dir = runs.require_run_dir(run_dir)
    cfg = runs.load_run_config(run_dir)
    path = runs.require_checkpoint(run_dir, checkpoint)
    dev = resolve_device(device)
    state = load_checkpoint(path, map_location="cpu")
    cfg.model.weights = None  # the checkpoint supplies every weight
    cfg.model.pretrained = False
    model = create_model(cfg.model, int(state["num_classes"]), cfg.regularization)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise UserError(f"{path} does not fit the model in {run_dir}/config.yaml ({str(err).splitlines()[0]})") from err
    return cfg, model.to(dev).eval(), state, dev


def evaluate_run(run: str | Path, split: str = "val", checkpoint: str = "best", device: str = "auto",
                 batch_size: int | None = None) -> dict[str, Any]:
    from vitcli.data import create_data
    from vitcli.engine.evaluate import evaluate

    cfg, model, state, dev = load_run_model(Path(run), checkpoint, device)
    if batch_size:
        cfg.data.eval_batch_size = batch_size
    data = create_data(cfg, device=str(dev), train=False)
    metrics = evaluate(model, data.loader(split), dev)
    return {"run": str(run), "split": split, "checkpoint": checkpoint, "epoch": int(state["epoch"]), **metrics}
