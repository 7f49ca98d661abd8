"""MiniPlaces leaderboard submissions (formats in shared/miniplaces.md).

- `<split>_top5.txt`: development-kit format, one line per image sorted by file
  name, exactly 5 distinct labels in descending confidence, single spaces, LF:
  `test/00000001.jpg 84 31 79 57 56`.
- `<split>_kaggle.csv`: the course Kaggle format, header `Id,Category`, rows
  `00000001,<top-1 label>` (8-digit id, no prefix or extension).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from vitcli.core import runs
from vitcli.core.errors import UserError
from vitcli.core.io import atomic_write

log = logging.getLogger("vitcli")

_MINIPLACES_ID = re.compile(r"^(?:val|test|train/.+)/(\d{8})\.jpg$")
_EIGHT_DIGITS = re.compile(r"(\d{8})\.jpg$")


def looks_like_miniplaces(ids: Sequence[str]) -> bool:
    """True when every id is a split-prefixed MiniPlaces path such as `test/00000001.jpg`."""
    return len(ids) > 0 and all(_MINIPLACES_ID.match(i) for i in ids)


def top5_labels(logits: np.ndarray) -> np.ndarray:
    """(N, 5) class indices in descending score; distinct by construction (a stable argsort)."""
    if logits.ndim != 2 or logits.shape[1] < 5:
        raise UserError(f"a top-5 submission needs at least 5 classes; these predictions have {logits.shape[-1]}")
    return np.argsort(-logits, axis=1, kind="stable")[:, :5]


def write_top5(path: str | Path, ids: Sequence[str], logits: np.ndarray) -> Path:
    """Development-kit file: lines sorted by file name (id), 5 labels each, LF endings."""
    if len(ids) != len(logits):
        raise UserError(f"{len(ids)} ids but {len(logits)} rows of logits")
    if len(set(ids)) != len(ids):
        raise UserError("sample ids repeat; a submission needs one line per distinct file name")
    top = top5_labels(logits)
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    lines = [f"{ids[i]} {' '.join(map(str, top[i]))}\n" for i in order]
    data = "".join(lines).encode()
    atomic_write(Path(path), lambda f: f.write(data))
    return Path(path)


def kaggle_ids(ids: Sequence[str]) -> list[str] | None:
    """The 8-digit Kaggle id of each sample, or None when they are not unique 8-digit names."""
    found = [_EIGHT_DIGITS.search(i) for i in ids]
    if not all(found):
        return None
    out = [m.group(1) for m in found]  # type: ignore[union-attr]
    return out if len(set(out)) == len(out) else None


def write_kaggle(path: str | Path, ids: Sequence[str], logits: np.ndarray) -> Path:
    """Course Kaggle CSV: `Id,Category` then `00000001,<top-1 label>` rows, sorted by id."""
    short = kaggle_ids(ids)
    if short is None:
        raise UserError("the Kaggle CSV needs ids whose file names are distinct 8-digit numbers (val/ or test/ images)")
    top1 = np.asarray(logits).argmax(axis=1)
    order = sorted(range(len(short)), key=lambda i: short[i])
    rows = ["Id,Category\n", *(f"{short[i]},{int(top1[i])}\n" for i in order)]
    data = "".join(rows).encode()
    atomic_write(Path(path), lambda f: f.write(data))
    return Path(path)


def write_submissions(out_dir: str | Path, split: str, ids: Sequence[str], logits: np.ndarray) -> list[Path]:
    """Both submission files under out_dir/submission/; the CSV only where Kaggle ids exist."""
    sub = Path(out_dir) / runs.SUBMISSION
    written = [write_top5(sub / f"{split}_top5.txt", ids, logits)]
    if kaggle_ids(ids) is not None:
        written.append(write_kaggle(sub / f"{split}_kaggle.csv", ids, logits))
    else:
        log.info(f"no Kaggle CSV for split {split}: its file names are not distinct 8-digit numbers")
    return written


def should_write(mode: str, data_name: str | None, ids: Sequence[str]) -> bool:
    """submission=auto writes for MiniPlaces data (by name or by id shape); always / never force it."""
    if mode == "auto":
        return data_name == "miniplaces" or looks_like_miniplaces(ids)
    return mode == "always"
