"""`data=wds`: WebDataset tar shards, read at random through their index.

    vitcli train data=wds data.root=/data/inet-wds data.train='train-{000000..000127}.tar' data.val=val.json

Each split is a list of shards (see shard_index.py); its index (samples per shard, ids, labels and
where each image member lies) is built once from the tar headers and cached. Sample i is read
with one `pread` of its image member from its shard (a few shards kept open per worker), so wds
splits go through the same FileLoader as image folders: the same seeded epoch order, per-rank
shards, per-sample augmentation seeds and exact mid-epoch resume. Remote shards (urls, `pipe:`
commands from your config) are copied into the cache dir first (shard_fetch.py); when that is not
possible, `data.streaming=true` reads them as a stream (see wds_stream.py).

Only the image member and the label member of a sample are read, as bytes: nothing in a shard is
unpickled (wids' default decoder would unpickle `.pkl`/`.pth` members) or executed.
"""

from __future__ import annotations

import importlib.util
import io
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from vitcli.core.errors import UserError, install_hint
from vitcli.data.files import ImageFileDataset
from vitcli.data.sources.folder_index import StringColumn, cache_dir
from vitcli.data.sources.shard_fetch import fetch, is_local
from vitcli.data.sources.shard_index import (
    IMAGE_KEYS,
    LABEL_KEY,
    ShardIndex,
    build_index,
    resolve_split,
)

EXTRA_HINT = install_hint("data")
SPLITS = ("train", "val", "test")


def require(module: str, source: str) -> None:
    """One line naming the extra when an optional data library is missing."""
    if importlib.util.find_spec(module) is None:
        raise UserError(f"data={source} needs the '{module}' package: {EXTRA_HINT}")


@dataclass
class ShardSplit:
    """One split of shards as FileLoader sees it: len, labels, ids (and `paths`, the names
    bad samples are reported by), subset(), and open(transform) -> the decoding dataset."""

    index: ShardIndex
    local: list[str]  # local path of each shard (remote ones fetched into the cache)
    rows: np.ndarray | None = None  # subset of the index's samples (None: all)
    labels: np.ndarray = field(init=False)
    ids: StringColumn = field(init=False)

    def __post_init__(self):
        if self.rows is None:
            self.labels, self.ids = self.index.labels, self.index.ids
        else:
            self.labels, self.ids = self.index.labels[self.rows], self.index.ids.take(self.rows)

    @property
    def paths(self) -> StringColumn:
        return self.ids

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> "ShardSplit":
        rows = np.asarray(idx, dtype=np.int64) if self.rows is None else self.rows[idx]
        return ShardSplit(self.index, self.local, rows)

    def sample_index(self, i: int) -> int:
        return int(i if self.rows is None else self.rows[i])

    def open(self, transform: Callable) -> "ShardImageDataset":
        return ShardImageDataset(self, transform)


class OpenShards:
    """File descriptors of the shards last read, at most `size` (the least recently used closed first)."""

    def __init__(self, paths: list[str], size: int = 64):
        self.paths, self.size, self.fds = paths, size, OrderedDict()

    def fd(self, shard: int) -> int:
        if shard in self.fds:
            self.fds.move_to_end(shard)
        else:
            if len(self.fds) >= self.size:
                os.close(self.fds.popitem(last=False)[1])
            self.fds[shard] = os.open(self.paths[shard], os.O_RDONLY)
        return self.fds[shard]

    def close(self) -> None:
        while self.fds:
            os.close(self.fds.popitem()[1])

    def __del__(self):
        self.close()


class ShardImageDataset(ImageFileDataset):
    """ImageFileDataset whose images are shard members, read where the index says they lie."""
    def __init__(self, split: ShardSplit, transform: Callable):
        super().__init__(split, transform)
        self._shards: OpenShards | None = None

    def __getstate__(self):
        return {**self.__dict__, "_shards": None}  # each worker opens the shards itself

    def raw(self, i: int) -> bytes:
        """The image member's bytes of sample i."""
        index, row = self.split.index, self.split.sample_index(i)
        if self._shards is None:
            self._shards = OpenShards(self.split.local)
        shard = index.shard_of(row)
        size = int(index.sizes[row])
        data = os.pread(self._shards.fd(shard), size, int(index.offsets[row]))
        if len(data) != size:
            raise OSError(f"{self.split.local[shard]} is shorter than when it was indexed (changed since?)")
        return data

    def read(self, i: int):
        with Image.open(io.BytesIO(self.raw(i))) as img:
            img.load()
            return img.convert("RGB")


def read_class_names(path: str) -> list[str]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"data.classes={path} does not exist (a text file, one class name per line)")
    names = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise UserError(f"data.classes={path} lists no class")
    return names


def split_spec(data_cfg: Any, split: str) -> Any:
    """data.<split>, else under data.root: <split>.json (what `vitcli prepare format=wds` writes),
    else the shards <split>-*.tar."""
    spec = getattr(data_cfg, split, None)
    if spec:
        return spec
    root = Path(data_cfg.root).expanduser() if data_cfg.root else None
    if root and (root / f"{split}.json").is_file():
        return f"{split}.json"
    if root and any(root.glob(f"{split}-*.tar")):
        return f"{split}-*.tar"
    return None


def check_labels(split: str, index: ShardIndex, num_classes: int, where: str) -> None:
    bad = np.flatnonzero((index.labels >= num_classes) | (index.labels < -1 if split == "test" else index.labels < 0))
    if len(bad):
        raise UserError(f"{index.place(int(bad[0]))} (data.{split}) has label {int(index.labels[bad[0]])}, outside "
                        f"0..{num_classes - 1} ({where}); fix the shard or data.classes")


def load_wds(data_cfg: Any) -> tuple[dict[str, ShardSplit], list[str]]:
    """The shard splits (train, val, test when given) and the class names."""
    require("webdataset", "wds")
    cache = cache_dir(getattr(data_cfg, "cache_dir", None))
    image_keys = tuple(k.strip().lower() for k in (data_cfg.image_key or ";".join(IMAGE_KEYS)).split(";") if k.strip())
    label_key = data_cfg.label_key or LABEL_KEY
    splits: dict[str, ShardSplit] = {}
    for split in SPLITS:
        spec = split_spec(data_cfg, split)
        if spec is None:
            if split != "test":
                raise UserError(f"data=wds needs data.{split}= (shard pattern such as '{split}-{{000000..000009}}.tar', "
                                f"a list, or a wids .json); none given, and no {split}.json or {split}-*.tar under data.root")
            continue
        desc = resolve_split(spec, data_cfg.root, split)
        local = [fetch(u, cache, desc.commands) for u in desc.urls]
        index = build_index(desc, image_keys, label_key, split != "test", dict(zip(desc.urls, local)).__getitem__, cache)
        if not len(index.labels):
            raise UserError(f"data.{split}={spec}: the shards hold no sample")
        splits[split] = ShardSplit(index, local)
    names = class_names(data_cfg, splits)
    for split, s in splits.items():
        check_labels(split, s.index, len(names), f"{len(names)} classes")
    return splits, names


def class_names(data_cfg: Any, splits: dict[str, ShardSplit]) -> list[str]:
    """data.classes, else classes.txt beside the train shards (prepare writes it), else 0..K-1."""
    if data_cfg.classes:
        return read_class_names(data_cfg.classes)
    beside = Path(splits["train"].local[0]).parent / "classes.txt"
    if is_local(splits["train"].index.urls[0]) and beside.is_file():
        return read_class_names(str(beside))
    count = data_cfg.num_classes or int(splits["train"].labels.max()) + 1
    return [str(i) for i in range(count)]
