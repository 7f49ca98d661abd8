"""A prediction set on disk: `predictions/<split>.npz` (logits, ids, labels, class names, source).

Stored with plain numpy arrays only (strings as unicode arrays, the source as a
JSON string), so loading never needs `allow_pickle`.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from vitcli.core.errors import UserError
from vitcli.core.io import atomic_write


@dataclass
class Predictions:
    logits: np.ndarray  # (N, C) float32; log-probabilities when TTA or an ensemble produced them
    ids: list[str]  # sample ids in row order
    class_names: list[str]
    labels: Optional[np.ndarray] = None  # (N,) int64, only when every label is known
    source: dict[str, Any] = field(default_factory=dict)  # run, checkpoint, tta, split, ...

    def __post_init__(self) -> None:
        self.logits = np.asarray(self.logits, dtype=np.float32)
        self.ids = [str(i) for i in self.ids]
        self.class_names = [str(c) for c in self.class_names]
        if self.labels is not None:
            labels = np.asarray(self.labels, dtype=np.int64)
            self.labels = None if (labels < 0).any() else labels  # partial labels count as unknown

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[1])

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    def save(self, path: str | Path) -> Path:

        arrays: dict[str, np.ndarray] = {
            "logits": self.logits,
            "ids": np.asarray(self.ids, dtype=str),
            "class_names": np.asarray(self.class_names, dtype=str),
            "source": np.asarray(json.dumps(self.source, default=str)),
        }
        if self.labels is not None:
            arrays["labels"] = self.labels
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write(Path(path), lambda f: f.write(buf.getvalue()))
        return Path(path)


def load_predictions(path: str | Path) -> Predictions:
    """Read a predictions npz written by `Predictions.save` (one-line UserError otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            labels = z["labels"] if "labels" in z.files else None
            return Predictions(
                logits=z["logits"], ids=z["ids"].tolist(), class_names=z["class_names"].tolist(),
                labels=labels, source=json.loads(str(z["source"])) if "source" in z.files else {},
            )
    except (KeyError, ValueError, OSError) as err:
        raise UserError(f"{path} is not a vitcli predictions file ({str(err).splitlines()[0]})") from err


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Percent of rows whose label is among the k highest scores."""
    if len(labels) == 0:
        return 0.0
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k] if k < logits.shape[1] else None
    hits = np.ones(len(labels), bool) if top is None else (top == labels[:, None]).any(axis=1)
    return 100.0 * float(hits.mean())


def softmax(logits: np.ndarray, temperatures: Optional[Sequence[float]] = None) -> np.ndarray:
    """Softmax over the last axis, in float32. For a (M, N, C) stack of members' logits, member m
    is divided by temperatures[m] first (one per member).

    >>> softmax(np.array([[0.0, 0.0]]))
    array([[0.5, 0.5]], dtype=float32)
    """
    x = np.asarray(logits, dtype=np.float32)
    if temperatures is not None:
        t = np.asarray(temperatures, dtype=np.float32)
        if t.shape != (x.shape[0],) or (t <= 0).any():
            raise UserError(f"temperatures needs {x.shape[0]} positive values (one per member), got {list(temperatures)}")
        x = x / t[:, None, None]
    x = x - x.max(axis=-1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)
    return x
