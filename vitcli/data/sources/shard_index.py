"""Which WebDataset shards make a split, and the index that makes them randomly accessible.

A split is given as a brace pattern (`train-{000000..000127}.tar`; quoted for Hydra), a local glob
(`train-*.tar`), a `::`-separated or YAML list of patterns, or a wids descriptor (`train.json`:
`{"wids_version": 1, "shardlist": [{"url": ..., "nsamples": ...}]}`, the format
`wids.ShardListDataset` reads and `vitcli prepare format=wds` writes). Local paths are relative
to `data.root`; a glob's matches are always local files, whatever their names.

A descriptor is data (it may come with a downloaded dataset): its local shards must lie under its
own folder or data.root, its remote ones are http(s)/object-store urls fetched without a shell
(shard_fetch.py), and it may not run commands (its `pipe:` urls are refused; they are taken only
from the user's own data.train= / data.val= / data.test=).

The index holds, per shard, its sample count, and per sample its id (the image member's name,
e.g. `train/n01440764/x.JPEG`, unique within the split), its label and where its image member's
bytes lie in the shard. It is built by reading the tar headers once (tar_members.py) and cached
under the vitcli cache dir, keyed by each shard's size and mtime, so a second run does not read
the shards again.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from vitcli.core.errors import UserError
from vitcli.data.sources.folder_index import StringColumn
from vitcli.data.sources.shard_fetch import check_remote, is_local, local_path, shown
from vitcli.data.sources.tar_members import shard_samples

INDEX_VERSION = 2
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
LABEL_KEY = "cls"


def expand_spec(spec: Any, root: str | None) -> list[str]:
    """Shard urls of a pattern or a list of patterns, in order; local ones as absolute paths."""
    from webdataset.shardlists import expand_urls

    patterns = [str(spec)] if isinstance(spec, str) else [str(s) for s in spec]
    urls: list[str] = []
    for pattern in patterns:
        for url in expand_urls(pattern):
            if not is_local(url):
                urls.append(url)
                continue
            path = os.path.expanduser(local_path(url))
            path = os.path.abspath(os.path.join(os.path.expanduser(root), path) if root else path)
            # a local glob (train-*.tar) needs no quoting for Hydra, unlike a brace pattern; its
            # matches are absolute paths, so a file named `pipe:...` or `http:...` stays a file
            urls += sorted(glob.glob(path)) or [path] if any(c in path for c in "*?[") else [path]
    return urls


@dataclass
class Descriptor:
    """A split's shard list: urls, their sample counts (None when unknown), and whether the urls
    are the user's own (their `pipe:` commands may run) or read from an index file."""

    urls: list[str]
    counts: list[int | None]
    commands: bool = False


def inside(path: str, folders: Sequence[str]) -> bool:
    path = os.path.normpath(path)
    return any(os.path.commonpath([path, os.path.normpath(f)]) == os.path.normpath(f) for f in folders)


def descriptor_url(shard: Any, where: str, base: str, allowed: Sequence[str]) -> tuple[str, int | None]:
    """One shardlist entry's url (local ones resolved against the index's folder, and kept inside
    it or data.root) and its sample count."""
    url = shard.get("url") if isinstance(shard, dict) else None
    if not isinstance(url, str) or not url:
        raise UserError(f"{where}: a shardlist entry has no url")
    if url.startswith("pipe:"):
        raise UserError(f"{where} lists a pipe: url ({shown(url[:60])}); commands are taken only from your own "
                        "config (data.train=/data.val=), never from a file inside a dataset")
    if is_local(url):
        url = os.path.normpath(os.path.join(base, local_path(url)))
        if not inside(url, allowed):
            raise UserError(f"{where} lists shard {shown(shard['url'])}, outside {' and '.join(allowed)}; an index "
                            "may only name shards under its own folder or data.root (list them in data.train= instead)")
    else:
        check_remote(url, where)
    count = shard.get("nsamples")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise UserError(f"{where}: nsamples of {shown(url)} is {count!r}, not a sample count; rewrite the index")
    return url, count


def read_descriptor(path: str, root: str | None = None) -> Descriptor:
    """A local wids descriptor; relative shard urls are resolved against its folder."""
    where = f"wids index {path}"
    try:
        desc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{where} does not exist; give shard patterns or the .json that `vitcli prepare "
                        "format=wds` wrote") from None
    except (OSError, ValueError) as err:
        raise UserError(f"{where} is not readable JSON ({err})") from None
    if not isinstance(desc, dict) or desc.get("wids_version") != 1 or not isinstance(desc.get("shardlist"), list):
        raise UserError(f"{where} is not a wids descriptor (needs wids_version 1 and a shardlist)")
    if desc.get("datasets"):
        raise UserError(f"{where} refers to other datasets ('datasets'); list its shards in 'shardlist' instead")
    base = os.path.dirname(os.path.abspath(path))
    allowed = [base] + ([os.path.abspath(os.path.expanduser(root))] if root else [])
    entries = [descriptor_url(shard, where, base, allowed) for shard in desc["shardlist"]]
    if not entries:
        raise UserError(f"{where} lists no shards")
    return Descriptor([u for u, _ in entries], [n for _, n in entries], commands=False)


def resolve_split(spec: Any, root: str | None, split: str) -> Descriptor:
    """The shards of one split: a descriptor (.json) or expanded patterns (local ones must exist)."""
    if isinstance(spec, str) and spec.endswith(".json") and is_local(spec):
        path = spec if os.path.isabs(os.path.expanduser(spec)) or not root else os.path.join(root, spec)
        return read_descriptor(os.path.expanduser(path), root)
    urls = expand_spec(spec, root)
    if not urls:
        raise UserError(f"data.{split}={spec} names no shard")
    for url in urls:
        if is_local(url) and not os.path.isfile(local_path(url)):
            raise UserError(f"shard {local_path(url)} (data.{split}) does not exist; check the pattern "
                            f"{spec} and data.root")
    return Descriptor(urls, [None] * len(urls), commands=True)


@dataclass
class ShardIndex:
    """Random-access index of a split's shards (wids shard list + per-sample ids, labels, image places)."""

    urls: list[str]
    counts: np.ndarray  # (S,) int64 samples per shard
    ids: StringColumn  # the image member's name, in shard order
    labels: np.ndarray  # (N,) int64, -1 when the split carries no labels
    offsets: np.ndarray  # (N,) int64 where each image member's bytes start in its shard
    sizes: np.ndarray  # (N,) int64 and how many there are

    @cached_property
    def ends(self) -> np.ndarray:
        return np.cumsum(self.counts)

    def shard_of(self, i: int) -> int:
        return int(np.searchsorted(self.ends, i, side="right"))

    def place(self, i: int) -> str:
        """`<shard>:<id>` of sample i, for messages."""
        return f"{os.path.basename(local_path(self.urls[self.shard_of(i)]))}:{self.ids[i]}"

    def arrays(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts, "id_data": self.ids.data, "id_offsets": self.ids.offsets,
                "labels": self.labels, "offsets": self.offsets, "sizes": self.sizes}

    @classmethod
    def from_arrays(cls, urls: list[str], z: Any) -> "ShardIndex":
        return cls(urls, z["counts"], StringColumn(z["id_data"], z["id_offsets"]), z["labels"], z["offsets"], z["sizes"])


def _fingerprint(urls: list[str], image_keys: Sequence[str], label_key: str) -> str:
    parts: list[Any] = [INDEX_VERSION, list(image_keys), label_key]
    for url in urls:
        st = os.stat(local_path(url)) if is_local(url) else None
        parts.append([url, st.st_size if st else None, st.st_mtime_ns if st else None])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def check_unique(ids: list[bytes], counts: list[int], urls: list[str]) -> None:
    """Sample ids name samples (predictions, reports, the data identity): one id, one sample."""
    seen: dict[bytes, int] = {}
    shard = 0
    ends = np.cumsum(counts).tolist()
    for i, sample_id in enumerate(ids):
        while i >= ends[shard]:
            shard += 1
        first = seen.setdefault(sample_id, shard)
        if len(seen) <= i:  # it was there already
            a, b = (os.path.basename(local_path(urls[s])) for s in (first, shard))
            where = f"twice in {a}" if a == b else f"in {a} and again in {b}"
            raise UserError(f"sample {sample_id.decode()!r} is {where}; keys must be unique within a split "
                            "(webdataset's convention): rewrite the shards")


def build_index(desc: Descriptor, image_keys: Sequence[str], label_key: str, labelled: bool,
                fetch: Callable[[str], str], cache: Path | None) -> ShardIndex:
    """The split's index, read from the cache when the shards are unchanged, else built and cached.

    `fetch(url) -> local path` copies a remote shard into the cache and returns local ones as they are."""
    key = _fingerprint(desc.urls, image_keys, label_key) + ("L" if labelled else "")
    path = cache / "shards" / f"{key}.npz" if cache is not None else None
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return ShardIndex.from_arrays(list(desc.urls), z)
        except (OSError, ValueError, KeyError):
            pass
    ids: list[bytes] = []
    labels: list[int] = []
    offsets: list[int] = []
    sizes: list[int] = []
    counts = []
    for url, expected in zip(desc.urls, desc.counts):
        shard = shard_samples(fetch(url), image_keys, label_key, labelled)
        if expected is not None and expected != len(shard.ids):
            raise UserError(f"wids index says {expected} samples in {url} but the shard holds {len(shard.ids)}; "
                            "rewrite the index (vitcli prepare format=wds) or drop it")
        counts.append(len(shard.ids))
        ids += shard.ids
        labels += shard.labels
        offsets += shard.offsets
        sizes += shard.sizes
    check_unique(ids, counts, desc.urls)
    index = ShardIndex(list(desc.urls), np.asarray(counts, dtype=np.int64), StringColumn.from_bytes(ids),
                       np.asarray(labels, dtype=np.int64), np.asarray(offsets, dtype=np.int64),
                       np.asarray(sizes, dtype=np.int64))
    if path is not None:
        from vitcli.core.io import atomic_write

        try:
            atomic_write(path, lambda f: np.savez(f, **index.arrays()))
        except OSError:
            pass  # a read-only cache only costs a re-read next time
    return index


def wids_descriptor(urls: list[str], counts: list[int], base: str, name: str | None = None) -> dict:
    """A wids_version 1 descriptor of local shards under `base` (urls relative to it)."""
    shardlist = [{"url": os.path.relpath(u, base), "nsamples": int(n), "filesize": os.path.getsize(u)}
                 for u, n in zip(urls, counts)]
    return {"wids_version": 1, **({"name": name} if name else {}), "shardlist": shardlist}
