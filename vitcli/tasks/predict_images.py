"""`vitcli predict run=DIR images=PATH`: top-k classes of the user's own image files.

PATH is an image file, a folder (searched recursively) or a glob. Every image goes
through the run's eval transform (the resize/crop and mean/std in its config.yaml)
and the model runs under the run's precision. Files that do not decode are listed
and skipped; only a PATH where nothing decodes is an error. The result is
RUN/predictions/<name>.csv: path, then class and probability for ranks 1..k.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape
from rich.table import Table

from vitcli.core import runs
from vitcli.core.errors import UserError, printable
from vitcli.core.io import write_csv
from vitcli.data.files import DECODE_ERRORS, find_image_files, load_rgb
from vitcli.data.transforms import create_file_transform
from vitcli.models.run_model import load_run_model

log = logging.getLogger("vitcli")

@dataclass
class ImagePredictions:
    paths: list[str]
    names: list[list[str]]  # per image, the top-k class names, best first
    probs: list[list[float]]
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    csv_path: Path | None = None


def output_name(pattern: str) -> str:
    """predictions/<name>.csv: the folder's or file's name, `images` for a glob."""
    path = Path(pattern).expanduser()
    if path.is_dir():
        return path.resolve().name or "images"
    if path.is_file():
        return path.stem
    return "images"


def decode(paths: list[Path], transform) -> tuple[list[Path], list[Any], list[tuple[str, str]]]:
    """(decoded paths, their tensors, (path, error) of the files that failed)."""
    ok, tensors, failed = [], [], []
    for p in paths:
        try:
            tensors.append(transform(load_rgb(str(p))))
            ok.append(p)
        except DECODE_ERRORS as err:
            failed.append((str(p), str(err).splitlines()[0] if str(err) else type(err).__name__))
    return ok, tensors, failed


def predict_images(run: str | Path, images: str, topk: int = 5, checkpoint: str = "best", device: str = "auto",
                   batch_size: int | None = None, name: str | None = None) -> ImagePredictions:
    """Predict every image under `images` with a run's model; write predictions/<name>.csv."""


    if topk < 1:
        raise UserError(f"topk={topk} must be at least 1")
    paths = find_image_files(images)
    cfg, model, state, runtime = load_run_model(Path(run), checkpoint, device)  # at the run's precision
    class_names = [str(n) for n in (state.get("class_names") or range(int(state["num_classes"])))]
    k = min(topk, len(class_names))
    # eval.calibrate=temperature, when fitted on these very weights (without TTA: one view per image here)
    temperature = runs.read_temperature(run, state["checkpoint_key"], "none") or 1.0
    transform = create_file_transform(cfg.augmentation, cfg.data, train=False)
    step = int(batch_size or cfg.data.eval_batch_size or 2 * cfg.data.batch_size)
    result = ImagePredictions([], [], [])
    for start in range(0, len(paths), step):
        ok, tensors, failed = decode(paths[start:start + step], transform)
        result.failed += failed
        if not ok:
            continue
        with torch.no_grad(), runtime.autocast():
            logits = model(torch.stack(tensors).to(runtime.device))
        probs, idx = (logits.float() / temperature).softmax(dim=-1).topk(k, dim=-1)
        result.paths += [str(p) for p in ok]
        result.names += [[class_names[i] for i in row] for row in idx.tolist()]
        result.probs += probs.tolist()
    for path, why in result.failed:
        log.warning(f"skipped {path}: {why}")
    if not result.paths:
        raise UserError(f"images={images}: none of the {len(paths)} files could be read as an image "
                        f"(first: {result.failed[0][0]}: {result.failed[0][1]})")
    result.csv_path = Path(run) / runs.PREDICTIONS / f"{name or output_name(images)}.csv"
    write_csv(result.csv_path, [{"path": p, **{col: val for r, (n, q) in enumerate(zip(names, probs), 1)
                                               for col, val in ((f"class_{r}", n), (f"prob_{r}", f"{q:.6f}"))}}
                                for p, names, probs in zip(result.paths, result.names, result.probs)])
    return result


def preview_table(result: ImagePredictions, rows: int = 10, shown: int = 3):
    """A rich table of the first rows: file, then the best `shown` classes with probabilities."""
    table = Table(title=f"{result.csv_path.name}: {len(result.paths)} images (first {min(rows, len(result.paths))})")
    table.add_column("image")
    for r in range(1, min(shown, len(result.names[0])) + 1):
        table.add_column(f"#{r}")
    base = os.path.commonpath([str(Path(p).parent) for p in result.paths])  # short names: relative to it
    for p, names, probs in list(zip(result.paths, result.names, result.probs))[:rows]:
        cells = [os.path.relpath(p, base), *[f"{n} {q:.1%}" for n, q in list(zip(names, probs))[:shown]]]
        table.add_row(*(escape(printable(c)) for c in cells))  # file and class names are data
    return table
