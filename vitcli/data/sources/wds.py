"""`data=wds`: WebDataset tar shards, read at random through wids (webdataset's indexed reader).

    vitcli train data=wds data.root=/data/inet-wds data.train='train-{000000..000127}.tar' data.val=val.json

Each split is a list of shards (see shard_index.py); its index (samples per shard, ids,
labels) is built once and cached. A sample is decoded by `wids.ShardListDataset[i]`, so
wds splits go through the same FileLoader as image folders: the same seeded epoch order,
per-rank shards, per-sample augmentation seeds and exact mid-epoch resume. Remote shards
(urls, `pipe:` commands from your config) are copied into the cache dir first; when that
is not possible, `data.streaming=true` reads them as a stream (see wds_stream.py).

Only the image member and the label member of a sample are decoded (wids' default
decoder would also unpickle `.pkl`/`.pth` members, which a dataset must not make us run).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from vitcli.core.errors import UserError, install_hint
from vitcli.data.files import ImageFileDataset
from vitcli.data.sources.folder_index import StringColumn, cache_dir
from vitcli.data.sources.shard_index import (
    IMAGE_KEYS,
    LABEL_KEY,
    ShardIndex,
    build_index,
    is_local,
    local_path,
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
    image_keys: tuple[str, ...]
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
        return ShardSplit(self.index, self.local, self.image_keys, rows)

    def sample_index(self, i: int) -> int:
        return int(i if self.rows is None else self.rows[i])

    def open(self, transform: Callable) -> "ShardImageDataset":
        return ShardImageDataset(self, transform)


class _LocalShards:
    """wids' LRU of open shards, minus the download step for local files (wids would copy
    them into its cache and write lock files beside them). Built on wids' own LRUShards."""

    def __new__(cls, lru_size: int):
        from wids.wids import IndexedTarSamples, LRUShards

        class LocalShards(LRUShards):
            def get_shard(self, url):
                self.accesses += 1
                if url not in self.lru:
                    self.lru[url] = IndexedTarSamples(path=url)  # mmap; no pickled side index is read
                    self.misses += 1
                return self.lru[url]

        return LocalShards(lru_size)


def open_wids(local: list[str], counts: np.ndarray, lru_size: int = 64):
    """wids.ShardListDataset over local shards, returning raw members (no decoder)."""
    import wids

    shards = [{"url": p, "nsamples": int(n)} for p, n in zip(local, counts)]
    with contextlib.redirect_stderr(io.StringIO()):  # it prints a summary line per construction
        ds = wids.ShardListDataset(shards, transformations=[], lru_size=min(lru_size, len(shards)))
    ds.cache = _LocalShards(min(lru_size, len(shards)))
    ds.check_cache_misses = lambda: None  # random order across shards misses by design (see README)
    return ds


class ShardImageDataset(ImageFileDataset):
    """ImageFileDataset whose images come from shard members (wids opens shards lazily per worker)."""
    def __init__(self, split: ShardSplit, transform: Callable):
        super().__init__(split, transform)
        self._wids = None

    def __getstate__(self):
        return {**self.__dict__, "_wids": None}  # each worker maps the shards itself

    def raw(self, i: int) -> bytes:
        """The image member's bytes of sample i."""
        if self._wids is None:
            self._wids = open_wids(self.split.local, self.split.index.counts)
        sample = self._wids[self.split.sample_index(i)]
        data = next((sample[f".{k}"] for k in self.split.image_keys if f".{k}" in sample), None)
        if data is None:
            raise OSError(f"no image member ({'/'.join(self.split.image_keys)})")
        return data.getvalue()

    def read(self, i: int):

        with Image.open(io.BytesIO(self.raw(i))) as img:
            img.load()
            return img.convert("RGB")


def fetch(url: str, cache: Path) -> str:
    """A shard's local path: local files as they are, remote ones copied once into the cache
    (http/https/gs/s3 through wids' downloader; `pipe:CMD` runs CMD and keeps its stdout)."""
    if is_local(url):
        return os.path.expanduser(local_path(url))
    from wids.wids_dl import download_file

    dest = cache / "wds" / f"{hashlib.sha256(url.encode()).hexdigest()[:24]}.tar"
    if dest.is_file():
        return str(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(f".tmp{os.getpid()}")
    try:
        if url.startswith("pipe:"):
            with open(tmp, "wb") as out:
                done = subprocess.run(url[5:], shell=True, stdout=out, stderr=subprocess.PIPE)
            if done.returncode != 0:
                raise UserError(f"shard command failed ({done.returncode}): {url[5:][:80]}: "
                                f"{done.stderr.decode(errors='replace').strip()[-200:]}")
        else:
            try:
                download_file(url, str(tmp))
            except (AssertionError, ValueError, OSError) as err:
                raise UserError(f"cannot fetch shard {url} ({err}); check the url, or read it as a stream "
                                "with data.streaming=true") from None
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return str(dest)


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
    require("wids", "wds")
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
        index = build_index(desc, image_keys, label_key, split != "test", lambda u: fetch(u, cache), cache)
        if not len(index.labels):
            raise UserError(f"data.{split}={spec}: the shards hold no sample")
        splits[split] = ShardSplit(index, [fetch(u, cache) for u in desc.urls], image_keys)
    names = class_names(data_cfg, splits)
    for split, s in splits.items():
        check_labels(split, s.index, len(names), f"{len(names)} classes")
    return splits, names


def class_names(data_cfg: Any, splits: dict[str, ShardSplit]) -> list[str]:
    """data.classes, else classes.txt beside the train shards (prepare writes it), else 0..K-1."""
    if data_cfg.classes:
        return read_class_names(data_cfg.classes)
    beside = Path(splits["train"].local[0]).parent / "classes.txt"
    if beside.is_file():
        return read_class_names(str(beside))
    count = data_cfg.num_classes or int(splits["train"].labels.max()) + 1
    return [str(i) for i in range(count)]
