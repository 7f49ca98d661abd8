"""`vitcli explain`'s library: maps of where a trained run's model looks, as one grid PNG.

Each sample gets two panels: the image (as the model receives it, un-normalized) captioned
with its true label and the top-3 predictions, and the map overlaid (vitcli/tasks/saliency.py).
Split samples are chosen with a seed and mix mistakes (red) with correct predictions (green).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitcli.core import runs
from vitcli.core.errors import UserError
from vitcli.core.runtime import Runtime
from vitcli.data import create_data
from vitcli.data.files import find_image_files
from vitcli.data.transforms import create_file_transform
from vitcli.engine.evaluate import evaluate
from vitcli.engine.tracking import attach_to_run
from vitcli.models.run_model import load_run_model
from vitcli.tasks.saliency import explain_maps, resolve_method
from vitcli.tasks.samples import gather_inputs, load_images, pick_samples
from vitcli.viz.gallery import denormalize, draw_grid

log = logging.getLogger("vitcli")

CHUNK = 32  # images per map computation (bounds memory for large n)


def explain_path(run_dir: Path, split: str, method: str) -> Path:
    return runs.plot_path(run_dir, f"explain_{split}_{method}.png")


def caption(names: list[str], probs: np.ndarray, label: int, true_name: str | None = None) -> str:
    """'true: cat' (or the file name) and the top-3 predictions with probabilities, one per line."""
    top = np.argsort(-probs, kind="stable")[:3]
    head = f"true: {names[label]}" if label >= 0 else (true_name or "true: ?")
    return "\n".join([head, *(f"{k + 1}. {names[c]} {100 * probs[c]:.0f}%" for k, c in enumerate(top))])


def split_inputs(cfg: Any, model, runtime: Runtime, split: str, n: int, seed: int):
    """(inputs, labels, sample ids) of `n` samples of a split chosen with `seed`, mistakes first."""
    data = create_data(cfg, device=str(runtime.device), train=False)
    loader = data.loader(split)
    out = evaluate(model, loader, runtime, keep_logits=True)
    labels = out["labels"].numpy()
    idx = pick_samples(out["logits"].argmax(dim=1).numpy(), labels, n, seed)
    ids = data.ids(split)
    return gather_inputs(loader, idx), labels[idx], [ids[i] for i in idx]


def file_inputs(cfg: Any, pattern: str, n: int):
    """(inputs, labels=-1, file names) of the first `n` image files matching `pattern`."""
    files = find_image_files(pattern)
    if len(files) > n:
        log.info(f"images={pattern}: {len(files)} files, explaining the first n={n}")
        files = files[:n]
    x = load_images(files, create_file_transform(cfg.augmentation, cfg.data, train=False))
    return x, np.full(len(files), -1, dtype=np.int64), [f.name for f in files]


def compute(model, x, method: str, runtime: Runtime) -> tuple[np.ndarray, np.ndarray]:
    """(softmax probabilities (B, C) at the run's precision, maps (B, H, W)); Grad-CAM explains the top-1 class."""


    probs, maps = [], []
    for chunk in x.split(CHUNK):
        chunk = chunk.to(runtime.device)
        with torch.no_grad(), runtime.autocast():
            p = model(chunk).float().softmax(dim=1).cpu()
        probs.append(p.numpy())
        maps.append(explain_maps(model, chunk, method, p.argmax(dim=1).tolist()))
    return np.concatenate(probs), np.concatenate(maps)


def explain_run(run: str | Path, split: str = "val", n: int = 16, method: str = "auto", images: str | None = None,
                checkpoint: str = "best", device: str = "auto", seed: int = 0, precision: Any = None) -> Path:
    """Write <run>/plots/explain_<split>_<method>.png (split 'images' for images=PATH); return its path."""
    if n <= 0:
        raise UserError(f"n={n}: explain at least one image (e.g. n=16)")
    cfg, model, state, runtime = load_run_model(Path(run), checkpoint, device, precision)
    method = resolve_method(model, method, f"model={cfg.model.name}")
    if images:
        x, labels, names = file_inputs(cfg, images, n)
        split = "images"
    else:
        x, labels, names = split_inputs(cfg, model, runtime, split, n, seed)
    if len(x) == 0:
        raise UserError(f"split {split} of {run} has no samples to explain")
    class_names = list(state.get("class_names") or [])
    probs, maps = compute(model, x, method, runtime)
    if len(class_names) != probs.shape[1]:
        class_names = [str(c) for c in range(probs.shape[1])]
    pred = probs.argmax(axis=1)
    captions = [caption(class_names, probs[i], int(labels[i]), names[i] if images else None) for i in range(len(x))]
    colors = ["black" if y < 0 else ("tab:green" if p == y else "tab:red") for p, y in zip(pred, labels)]
    run_dir = Path(run)
    title = (f"{cfg.name}/{run_dir.name} · {cfg.model.name} · {method} · {split} · checkpoint={checkpoint}"
             + ("" if images else f" · {int((pred != labels).sum())} of {len(x)} wrong (red)"))
    out = draw_grid(explain_path(run_dir, split, method), denormalize(x, cfg.data.mean, cfg.data.std),
                    captions, title, overlays=maps, colors=colors)
    log.info(f"wrote {out} ({len(x)} images, method={method})")

    attach_to_run(run_dir, "explain", {}, [out])  # the trackers the run was trained with
    return out
