"""Predicting a split with a trained run (loaded by models/run_model.py), at the run's precision,
after checking that the split and the class names are those the checkpoint was trained on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitcli.core import runs
from vitcli.core.errors import UserError
from vitcli.core.predictions import Predictions
from vitcli.data import create_data
from vitcli.data.module import check_data, describe_data, split_identity
from vitcli.engine.evaluate import evaluate
from vitcli.models.run_model import load_run_model


def run_split(run: str | Path, split: str | None = "val", checkpoint: str = "best", device: str = "auto",
              batch_size: int | None = None, tta: str = "none", crop_fraction: float = 0.875,
              precision: Any = None, data_check: str = "strict"):
    """Evaluate a run's model on a split at the run's precision, keeping logits: (metrics dict, Predictions).

    split=None picks test when the run's data has one, else val. The split's samples and the class
    names must be those the checkpoint records (data_check=warn: a difference is logged, not fatal).
    """

    cfg, model, state, runtime = load_run_model(Path(run), checkpoint, device, precision)
    if batch_size:
        cfg.data.eval_batch_size = batch_size
    data = create_data(cfg, device=str(runtime.device), train=False)
    split = split or ("test" if "test" in data.loaders else "val")
    loader = data.loader(split)
    check_data(state, data, [split], state["checkpoint_name"], describe_data(cfg.data), str(data_check),
               fix="restore the data the run was trained on")
    class_names = list(state.get("class_names") or data.class_names)
    if len(class_names) != int(state["num_classes"]):
        raise UserError(f"{run}: checkpoint has {state['num_classes']} classes but {len(class_names)} class names")
    metrics = evaluate(model, loader, runtime, keep_logits=True, tta=tta, crop_fraction=crop_fraction)
    ids = data.ids(split)
    key = state["checkpoint_key"]
    source = {"run": str(Path(run).resolve()), "checkpoint": str(checkpoint), "checkpoint_key": key,
              "tta": str(tta), "split": split, "epoch": int(state["epoch"]), "model": cfg.model.name,
              "data": cfg.data.name, "data_identity": split_identity(loader.split), "precision": runtime.precision}
    temperature = runs.read_temperature(run, key, str(tta))
    if temperature is not None:  # eval.calibrate=temperature: softmax(logits / T) is calibrated
        source["temperature"] = temperature
    preds = Predictions(logits=metrics.pop("logits").numpy(), ids=ids, class_names=class_names,
                        labels=metrics.pop("labels").numpy(), source=source)
    metrics.pop("counts")  # exact totals, for DDP reduction only
    result = {"run": str(run), "split": split, "checkpoint": str(checkpoint), "tta": str(tta),
              "precision": runtime.precision, "epoch": int(state["epoch"]), "data": cfg.data.name, **metrics}
    return result, preds
