"""Loading a trained run back: its config, data, model and checkpoint; predicting a split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitcli import runs
from vitcli.errors import UserError

CHECKPOINTS = ("best", "last", "ema")


def _load_state(run_dir: Path, checkpoint: str) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """(checkpoint path, full checkpoint dict, the model state dict to load) for best | last | ema."""
    from vitcli.engine.checkpoint import load_checkpoint

    if checkpoint not in CHECKPOINTS:
        raise UserError(f"checkpoint={checkpoint} is not one of {', '.join(CHECKPOINTS)}")
    if checkpoint != "ema":
        path = runs.require_checkpoint(run_dir, checkpoint)
        state = load_checkpoint(path, map_location="cpu")
        return path, state, state["model"]
    # EMA weights travel inside best.pt / last.pt as "model_ema".
    for which in ("best", "last"):
        path = runs.checkpoint_path(run_dir, which)
        if path.is_file():
            state = load_checkpoint(path, map_location="cpu")
            if state.get("model_ema"):
                return path, state, state["model_ema"]
    raise UserError(f"{run_dir} has no EMA weights (train with EMA enabled, or use checkpoint=best or checkpoint=last)")


def load_run_model(run_dir: Path, checkpoint: str = "best", device: str = "auto"):
    """(cfg, model in eval mode on device, checkpoint state, device) for a run directory."""
    from vitcli.engine.trainer import resolve_device
    from vitcli.models import create_model

    run_dir = runs.require_run_dir(run_dir)
    cfg = runs.load_run_config(run_dir)
    path, state, weights = _load_state(run_dir, checkpoint)
    dev = resolve_device(device)
    cfg.model.weights = None  # the checkpoint supplies every weight
    cfg.model.pretrained = False
    model = create_model(cfg.model, int(state["num_classes"]), cfg.regularization)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise UserError(f"{path} does not fit the model in {run_dir}/config.yaml ({str(err).splitlines()[0]})") from err
    return cfg, model.to(dev).eval(), state, dev


def run_split(run: str | Path, split: str | None = "val", checkpoint: str = "best", device: str = "auto",
              batch_size: int | None = None, tta: str = "none", crop_fraction: float = 0.875):
    """Evaluate a run's model on a split, keeping logits: (metrics dict, Predictions).

    split=None picks test when the run's data has one, else val.
    """
    from vitcli.data import create_data
    from vitcli.engine.evaluate import evaluate
    from vitcli.predictions import Predictions

    cfg, model, state, dev = load_run_model(Path(run), checkpoint, device)
    if batch_size:
        cfg.data.eval_batch_size = batch_size
    data = create_data(cfg, device=str(dev), train=False)
    split = split or ("test" if "test" in data.loaders else "val")
    class_names = list(state.get("class_names") or data.class_names)
    if len(class_names) != int(state["num_classes"]):
        raise UserError(f"{run}: checkpoint has {state['num_classes']} classes but {len(class_names)} class names")
    metrics = evaluate(model, data.loader(split), dev, keep_logits=True, tta=tta, crop_fraction=crop_fraction)
    ids = data.ids(split)
    source = {"run": str(Path(run).resolve()), "checkpoint": checkpoint, "tta": tta, "split": split,
              "epoch": int(state["epoch"]), "model": cfg.model.name, "data": cfg.data.name}
    preds = Predictions(logits=metrics.pop("logits").numpy(), ids=ids, class_names=class_names,
                        labels=metrics.pop("labels").numpy(), source=source)
    metrics.pop("sums")  # raw counts, for DDP all-reduce only
    result = {"run": str(run), "split": split, "checkpoint": checkpoint, "tta": tta,
              "epoch": int(state["epoch"]), "data": cfg.data.name, **metrics}
    return result, preds


def evaluate_run(run: str | Path, split: str = "val", checkpoint: str = "best", device: str = "auto",
                 batch_size: int | None = None, tta: str = "none") -> dict[str, Any]:
    result, _ = run_split(run, split, checkpoint, device, batch_size, tta)
    return result
