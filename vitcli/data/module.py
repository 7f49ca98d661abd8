"""What the engine needs from a dataset (a DataModule), the loader rules every source shares, and
its identity: what a run was trained on, recorded in every checkpoint (`data_identity`) and compared
by the commands that read a run back (train resume, eval, predict, export, ensemble through predict).

Per split: the sample count, `ids` (a hash of the sorted sample ids: the same samples, whatever
their order), `labels` (a hash of the sorted (id, label) pairs: the same labels for them) and
`order` (a hash of the ids in the order the loader indexes them: exact resume draws each
epoch's permutation over these positions, so another order means other batches). A streamed
split has no ids up front and records its shard list instead. The class names sit beside them.
A mismatch stops the command with one line saying what differs and what to do, unless the user
passes `data_check=warn`, which logs the same line and goes on (a resumed run then records the
data it continues on).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from vitcli.core.errors import UserError

log = logging.getLogger("vitcli")


@dataclass
class DataModule:
    """What the engine needs from a dataset: loaders per split and class info."""

    name: str
    num_classes: int
    class_names: list[str]
    loaders: dict[str, Any] = field(default_factory=dict)  # split -> loader
    info: dict[str, Any] = field(default_factory=dict)  # counts, skipped files, ...
    class_counts: Any = None  # (num_classes,) int64 train samples per class (None: a stream)

    def ids(self, split: str) -> list[str]:
        """Sample ids of a split in the order its (unshuffled) loader yields them."""
        loader = self.loader(split)
        source = getattr(loader, "split", None) or getattr(loader, "dataset", None)
        return list(source.ids)

    def loader(self, split: str):
        if split not in self.loaders:
            raise UserError(f"split '{split}' is not available for data={self.name}; choose one of {sorted(self.loaders)}")
        return self.loaders[split]


def validate_data_cfg(data_cfg: Any) -> None:
    if data_cfg.img_size <= 0:
        raise UserError(f"data.img_size={data_cfg.img_size} must be a positive number of pixels (e.g. data.img_size=32)")
    if data_cfg.batch_size <= 0:
        raise UserError(f"data.batch_size={data_cfg.batch_size} must be positive")
    if not 0.0 < data_cfg.val_fraction < 1.0:
        raise UserError(f"data.val_fraction={data_cfg.val_fraction} must be between 0 and 1")
    if len(data_cfg.mean) != 3 or len(data_cfg.std) != 3:
        raise UserError("data.mean and data.std need three values each (RGB)")


def eval_batch_size(data_cfg: Any) -> int:
    """Evaluation batch: data.eval_batch_size, else twice the training batch (no gradients to keep)."""
    return data_cfg.eval_batch_size or 2 * data_cfg.batch_size


def train_drop_last(num_samples: int, batch_size: int) -> bool:
    """Drop a ragged last training batch, unless the split is smaller than one batch."""
    return num_samples > batch_size


def check_num_classes(data_cfg: Any, found: int, where: str) -> None:
    if data_cfg.num_classes is not None and data_cfg.num_classes != found:
        raise UserError(f"data.num_classes={data_cfg.num_classes} but {where} has {found} classes; drop the override")


# ---- identity: what a run was trained on -------------------------------------------

IDENTITY_KEY = "data_identity"  # the checkpoint entry
IDENTITY_VERSION = 1
CLASSES_SHOWN = 3  # differing classes named in the one-line message


def digest(items: Iterable[str]) -> str:
    """16 hex digits of the sha256 of the items joined by newlines."""
    return hashlib.sha256("\n".join(items).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def split_identity(split: Any) -> dict[str, Any]:
    """count, ids, labels, order of one split (a stream: count and its shard list)."""
    ids = getattr(split, "ids", None)
    if ids is None:  # data.streaming=true: the shards are all that is known before reading
        return {"count": len(split), "shards": digest(map(str, getattr(split, "urls", [])))}
    ids = list(ids)
    labels = getattr(split, "labels", None)
    labels = np.full(len(ids), -1) if labels is None else np.asarray(labels)
    pairs = sorted(zip(ids, labels.tolist()))
    return {"count": len(ids), "ids": digest(i for i, _ in pairs), "labels": digest(f"{i}\t{y}" for i, y in pairs),
            "order": digest(ids)}


def data_identity(data: Any, splits: Sequence[str] | None = None) -> dict[str, Any]:
    """The identity of a DataModule: its class names and the given splits (None: all of them)."""
    names = list(data.loaders) if splits is None else [s for s in splits if s in data.loaders]
    return {"version": IDENTITY_VERSION, "class_names": [str(n) for n in data.class_names],
            "splits": {s: split_identity(data.loaders[s].split) for s in names}}


def describe_data(data_cfg: Any) -> str:
    """How the user named the data: data.root=..., data.dataset=..., else data=<name>."""
    for key in ("root", "dataset"):
        value = data_cfg.get(key) if hasattr(data_cfg, "get") else getattr(data_cfg, key, None)
        if value:
            return f"data.{key}={value}"
    return f"data={data_cfg.name}"


def class_difference(recorded: Sequence[str], current: Sequence[str], where: str) -> str | None:
    """How two class lists differ, as one phrase (names quoted with repr, so it stays one line).

    >>> class_difference(["cat", "dog"], ["cat", "dog"], "data.root=d") is None
    True
    >>> class_difference(["cat", "dog", "eel"], ["cow", "dog", "eel", "fox"], "data.root=d")
    "class 0 is 'cat' in the checkpoint but 'cow' in data.root=d; 'cat' gone, 'cow', 'fox' new; 4 classes now, 3 before"
    """
    recorded, current = [str(n) for n in recorded], [str(n) for n in current]
    if recorded == current:
        return None
    parts = []
    changed = [i for i, (a, b) in enumerate(zip(recorded, current)) if a != b]
    if changed:
        i = changed[0]
        more = f" ({len(changed)} classes differ)" if len(changed) > 1 else ""
        parts.append(f"class {i} is {recorded[i]!r} in the checkpoint but {current[i]!r} in {where}{more}")
    gone = [repr(n) for n in recorded if n not in set(current)][:CLASSES_SHOWN]
    new = [repr(n) for n in current if n not in set(recorded)][:CLASSES_SHOWN]
    if gone or new:
        parts.append(", ".join(filter(None, [", ".join(gone) + " gone" if gone else "",
                                            ", ".join(new) + " new" if new else ""])))
    elif changed:
        parts.append("the same names in another order")
    if len(recorded) != len(current):
        parts.append(f"{len(current)} classes now, {len(recorded)} before")
    return "; ".join(parts)


def split_difference(name: str, recorded: dict[str, Any], current: dict[str, Any], order: bool) -> str | None:
    """How a split differs from what the checkpoint recorded, as a phrase; None when it does not."""
    n0, n1 = int(recorded.get("count", -1)), int(current.get("count", -1))
    if n0 != n1:
        more = n1 - n0
        return f"{abs(more)} {name} samples {'added' if more > 0 else 'removed'} ({n0} in the checkpoint, {n1} now)"
    if "shards" in recorded or "shards" in current:
        same = recorded.get("shards") == current.get("shards")
        return None if same else f"{name} reads other shards (the same count, {n1})"
    if recorded.get("ids") != current.get("ids"):
        return f"{name} holds other samples (the same count, {n1})"
    if recorded.get("labels") != current.get("labels"):
        return f"{name} samples carry other labels"
    if order and recorded.get("order") != current.get("order"):
        return f"{name} lists its samples in another order (exact resume would draw other batches)"
    return None


def identity_problems(state: dict[str, Any], data: Any, splits: Sequence[str], where: str,
                      order: bool = False) -> tuple[list[str], bool]:
    """(what differs between a checkpoint and `data` on `splits`, whether the checkpoint records an
    identity at all). Checkpoints written before identities were recorded still compare class names;
    a split the checkpoint does not record (a test split added later) is not compared."""
    problems = []
    recorded_names = state.get("class_names")
    if recorded_names:
        problem = class_difference(recorded_names, data.class_names, where)
        if problem:
            problems.append(problem)
    recorded = state.get(IDENTITY_KEY)
    if not recorded:
        return problems, False
    wanted = [s for s in splits if s in recorded.get("splits", {})]
    current = data_identity(data, wanted)["splits"]
    for name in wanted:
        if name not in current:
            problems.append(f"the data has no {name} split any more")
            continue
        problem = split_difference(name, recorded["splits"][name], current[name], order)
        if problem:
            problems.append(problem)
    return problems, True


def check_data(state: dict[str, Any], data: Any, splits: Sequence[str], checkpoint: str, data_desc: str,
               mode: str = "strict", fix: str = "restore the data it was trained on", order: bool = False) -> None:
    """Stop (mode strict) or warn (mode warn) when `data` differs from what `checkpoint` was trained on.

    Args:
        state: the loaded checkpoint (class_names, data_identity).
        splits: the splits the command reads (resume: train and the validation splits).
        checkpoint: how to name the checkpoint in the message (its path).
        data_desc: how to name the data (describe_data).
        fix: what the user can do, besides data_check=warn.
        order: also compare each split's order (exact resume).
    """
    problems, recorded = identity_problems(state, data, splits, data_desc, order)
    if not recorded:
        log.warning(f"{checkpoint} records no data identity (written by an older vitcli): only its class names "
                    f"are compared with {data_desc}")
    if not problems:
        return
    line = f"{checkpoint} was trained on other data than {data_desc} holds now: " + "; ".join(problems)
    if str(mode) == "warn":
        log.warning(f"{line} (data_check=warn: going on)")
        return
    raise UserError(f"{line}; {fix}, or pass data_check=warn to accept the change")
