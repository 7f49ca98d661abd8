"""Loading a trained run back: its config, data, model and checkpoint; predicting a split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitcli import runs
from vitcli.engine.runtime import Runtime
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


def load_run_model(run_dir: Path, checkpoint: str = "best", device: str = "auto", precision: Any = None,
                   runtime: Runtime | None = None) -> tuple[Any, Any, dict[str, Any], Runtime]:
    """A trained run's model, ready for inference.

    Args:
        run_dir: the run directory (config.yaml + checkpoints/).
        checkpoint: best | last | ema.
        device: where to run it (auto: a GPU when one is visible).
        precision: null: the precision the run trained with (so eval equals its summary); 32 | bf16 | fp16.
        runtime: an existing runtime to share (a distillation teacher runs on its student's).
    Returns:
        (the run's config, the model in eval mode on the runtime's device, the checkpoint dict, the runtime).
    """
    from vitcli.models import create_model

    run_dir = runs.require_run_dir(run_dir)
    cfg = runs.load_run_config(run_dir)
    path, state, weights = _load_state(run_dir, str(checkpoint))
    if runtime is None:
        runtime = Runtime.create(device, cfg.trainer.precision if precision is None else precision)
    cfg.model.weights = None  # the checkpoint supplies every weight
    cfg.model.pretrained = False
    model = create_model(cfg.model, int(state["num_classes"]), cfg.regularization)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise UserError(f"{path} does not fit the model in {run_dir}/config.yaml ({str(err).splitlines()[0]})") from err
    return cfg, model.to(runtime.device).eval(), state, runtime


def run_split(run: str | Path, split: str | None = "val", checkpoint: str = "best", device: str = "auto",
              batch_size: int | None = None, tta: str = "none", crop_fraction: float = 0.875,
              precision: Any = None):
    """Evaluate a run's model on a split at the run's precision, keeping logits: (metrics dict, Predictions).

    split=None picks test when the run's data has one, else val.
    """
    from vitcli.data import create_data
    from vitcli.engine.evaluate import evaluate
    from vitcli.predictions import Predictions

    cfg, model, state, runtime = load_run_model(Path(run), checkpoint, device, precision)
    if batch_size:
        cfg.data.eval_batch_size = batch_size
    data = create_data(cfg, device=str(runtime.device), train=False)
    split = split or ("test" if "test" in data.loaders else "val")
    class_names = list(state.get("class_names") or data.class_names)
    if len(class_names) != int(state["num_classes"]):
        raise UserError(f"{run}: checkpoint has {state['num_classes']} classes but {len(class_names)} class names")
    metrics = evaluate(model, data.loader(split), runtime, keep_logits=True, tta=tta, crop_fraction=crop_fraction)
    ids = data.ids(split)
    source = {"run": str(Path(run).resolve()), "checkpoint": str(checkpoint), "tta": str(tta), "split": split,
              "epoch": int(state["epoch"]), "model": cfg.model.name, "data": cfg.data.name,
              "precision": runtime.precision}
    preds = Predictions(logits=metrics.pop("logits").numpy(), ids=ids, class_names=class_names,
                        labels=metrics.pop("labels").numpy(), source=source)
    metrics.pop("counts")  # exact totals, for DDP reduction only
    result = {"run": str(run), "split": split, "checkpoint": str(checkpoint), "tta": str(tta),
              "precision": runtime.precision, "epoch": int(state["epoch"]), "data": cfg.data.name, **metrics}
    return result, preds


def evaluate_run(run: str | Path, split: str = "val", checkpoint: str = "best", device: str = "auto",
                 batch_size: int | None = None, tta: str = "none", precision: Any = None) -> dict[str, Any]:
    result, _ = run_split(run, split, checkpoint, device, batch_size, tta, precision=precision)
    return result
