"""Which WebDataset shards make a split, and the index that makes them randomly accessible.

A split is given as a brace pattern (`train-{000000..000127}.tar`; quoted for Hydra), a local glob
(`train-*.tar`), a `::`-separated or
YAML list of patterns, or a wids descriptor (`train.json`: `{"wids_version": 1,
"shardlist": [{"url": ..., "nsamples": ...}]}`, the format `wids.ShardListDataset` reads
and `vitcli prepare format=wds` writes). Local paths are relative to `data.root`;
URLs (http, https, s3 ... through wids' downloader) and `pipe:` commands are allowed only
when written in the user's own config: a descriptor found inside a dataset may not run
commands (its `pipe:` urls are refused).

The index holds, per shard, its sample count, and per sample its id (`<key>.<image ext>`,
the image member's name, e.g. `train/n01440764/x.JPEG`) and label. It is built by reading
the tar headers once (wids' memory-mapped reader) and cached under the vitcli cache dir,
keyed by each shard's size and mtime, so a second run does not read the shards again.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlparse

import numpy as np

from vitcli.core.errors import UserError
from vitcli.data.sources.folder_index import StringColumn

INDEX_VERSION = 1
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
LABEL_KEY = "cls"


def is_local(url: str) -> bool:
    return not url.startswith("pipe:") and urlparse(url).scheme in ("", "file")


def local_path(url: str) -> str:
    return urlparse(url).path if url.startswith("file:") else url


def expand_spec(spec: Any, root: str | None) -> list[str]:
    """Shard urls of a pattern, a list of patterns, or a wids descriptor (.json), in order."""
    from webdataset.shardlists import expand_urls

    patterns = [str(spec)] if isinstance(spec, str) else [str(s) for s in spec]
    urls: list[str] = []
    for pattern in patterns:
        for url in expand_urls(pattern):
            if not is_local(url):
                urls.append(url)
                continue
            path = os.path.expanduser(local_path(url))
            if not os.path.isabs(path) and root:
                path = os.path.join(os.path.expanduser(root), path)
            # a local glob (train-*.tar) needs no quoting for Hydra, unlike a brace pattern
            urls += sorted(glob.glob(path)) or [path] if any(c in path for c in "*?[") else [path]
    return urls


@dataclass
class Descriptor:
    """A wids shard list: urls and their sample counts (None when unknown)."""

    urls: list[str]
    counts: list[int | None]


def read_descriptor(path: str) -> Descriptor:
    """A local wids descriptor; relative shard urls are resolved against its folder."""
    where = f"wids index {path}"
    try:
        desc = json.loads(Path(path).read_text())
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
    urls, counts = [], []
    for shard in desc["shardlist"]:
        url = str(shard.get("url", "")) if isinstance(shard, dict) else ""
        if not url:
            raise UserError(f"{where}: a shardlist entry has no url")
        if url.startswith("pipe:"):
            raise UserError(f"{where} lists a pipe: url ({url[:60]}); commands are taken only from your own "
                            "config (data.train=/data.val=), never from a file inside a dataset")
        if is_local(url) and not os.path.isabs(local_path(url)):
            url = os.path.join(base, local_path(url))
        urls.append(url)
        counts.append(int(shard["nsamples"]) if "nsamples" in shard else None)
    if not urls:
        raise UserError(f"{where} lists no shards")
    return Descriptor(urls, counts)


def resolve_split(spec: Any, root: str | None, split: str) -> Descriptor:
    """The shards of one split: a descriptor (.json) or expanded patterns (local ones must exist)."""
    if isinstance(spec, str) and spec.endswith(".json") and is_local(spec):
        path = spec if os.path.isabs(os.path.expanduser(spec)) or not root else os.path.join(root, spec)
        return read_descriptor(os.path.expanduser(path))
    urls = expand_spec(spec, root)
    if not urls:
        raise UserError(f"data.{split}={spec} names no shard")
    for url in urls:
        if is_local(url) and not os.path.isfile(local_path(url)):
            raise UserError(f"shard {local_path(url)} (data.{split}) does not exist; check the pattern "
                            f"{spec} and data.root")
    return Descriptor(urls, [None] * len(urls))


@dataclass
class ShardIndex:
    """Random-access index of a split's shards (wids shard list + per-sample ids and labels)."""

    urls: list[str]
    counts: np.ndarray  # (S,) int64 samples per shard
    ids: StringColumn  # <key>.<image ext>, in shard order
    labels: np.ndarray  # (N,) int64, -1 when the split carries no labels

    def shardlist(self) -> list[dict]:
        """The wids shard list (`[{"url", "nsamples"}]`) for wids.ShardListDataset."""
        return [{"url": u, "nsamples": int(n)} for u, n in zip(self.urls, self.counts)]

    def place(self, i: int) -> str:
        """`<shard>:<id>` of sample i, for messages."""
        shard = int(np.searchsorted(np.cumsum(self.counts), i, side="right"))
        return f"{os.path.basename(local_path(self.urls[shard]))}:{self.ids[i]}"


def shard_samples(path: str, image_keys: Sequence[str], label_key: str, labelled: bool) -> tuple[list[bytes], list[int]]:
    """(ids, labels) of one local shard, read from its tar headers and label members.

    The sample numbering is wids' (IndexedTarSamples: members grouped by key, in tar order)."""
    from wids.wids import group_by_key, splitname
    from wids.wids_mmtar import MMIndexedTar

    name = os.path.basename(path)
    if os.path.getsize(path) == 0:
        raise UserError(f"shard {path} is empty; rewrite it (vitcli prepare format=wds) or drop it from the pattern")
    try:
        tar = MMIndexedTar(path)
    except Exception as err:  # struct.error / ValueError on a cut or foreign header
        raise UserError(f"shard {path} is not a readable tar file (truncated or corrupt: "
                        f"{type(err).__name__}); re-download or rewrite it") from None
    try:
        mm = tar.mmapped_file
        # a complete tar ends with zero blocks (end-of-archive); a cut one ends inside a member or header
        if len(mm) % 512 or mm[-512:] != bytes(512) or any(o + 512 + n > len(mm) for _, o, n in tar.by_index[-1:]):
            raise UserError(f"shard {path} is truncated ({len(mm)} bytes, no end-of-archive block after its last "
                            "member); re-download or rewrite it")
        names = list(tar.names())
        json_field = label_key[5:] if label_key.startswith("json.") else None
        want = "json" if json_field else label_key
        ids, labels = [], []
        for group in group_by_key(names):
            members = {splitname(names[i])[1][1:].lower(): i for i in group}
            key = splitname(names[group[0]])[0]
            image = next((k for k in image_keys if k in members), None)
            if image is None:
                raise UserError(f"shard {name}: sample '{key}' has no image member ({'/'.join(image_keys)}; it has "
                                f"{', '.join(sorted(members))}); set data.image_key=")
            ids.append(names[members[image]].encode())
            if want not in members:
                if labelled:
                    raise UserError(f"shard {name}: sample '{key}' has no '{want}' member (it has "
                                    f"{', '.join(sorted(members))}); set data.label_key= to the member holding the label")
                labels.append(-1)
                continue
            labels.append(_parse_label(tar.get_at_index(members[want])[1], json_field, f"shard {name}: sample '{key}'"))
        return ids, labels
    finally:
        tar.close()


def _parse_label(raw: bytes, json_field: str | None, where: str) -> int:
    try:
        if json_field:
            value = json.loads(bytes(raw))
            for part in json_field.split("."):
                value = value[part]
            return int(value)
        return int(bytes(raw).decode().strip())
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        what = f"json field '{json_field}'" if json_field else "label member"
        raise UserError(f"{where}: the {what} is not an integer class index ({bytes(raw)[:40]!r})") from None


def _fingerprint(urls: list[str], image_keys: Sequence[str], label_key: str) -> str:
    parts: list[Any] = [INDEX_VERSION, list(image_keys), label_key]
    for url in urls:
        st = os.stat(local_path(url)) if is_local(url) else None
        parts.append([url, st.st_size if st else None, st.st_mtime_ns if st else None])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def build_index(desc: Descriptor, image_keys: Sequence[str], label_key: str, labelled: bool,
                fetch, cache: Path | None) -> ShardIndex:
    """The split's index, read from the cache when the shards are unchanged, else built and cached.

    `fetch(url) -> local path` downloads a remote shard (wids' cache) and returns local ones as they are."""
    key = _fingerprint(desc.urls, image_keys, label_key) + ("L" if labelled else "")
    path = cache / "shards" / f"{key}.npz" if cache is not None else None
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return ShardIndex(list(desc.urls), z["counts"], StringColumn(z["id_data"], z["id_offsets"]), z["labels"])
        except (OSError, ValueError, KeyError):
            pass
    ids: list[bytes] = []
    labels: list[int] = []
    counts = []
    for url, expected in zip(desc.urls, desc.counts):
        shard_ids, shard_labels = shard_samples(fetch(url), image_keys, label_key, labelled)
        if expected is not None and expected != len(shard_ids):
            raise UserError(f"wids index says {expected} samples in {url} but the shard holds {len(shard_ids)}; "
                            "rewrite the index (vitcli prepare format=wds) or drop it")
        counts.append(len(shard_ids))
        ids += shard_ids
        labels += shard_labels
    index = ShardIndex(list(desc.urls), np.asarray(counts, dtype=np.int64), StringColumn.from_bytes(ids),
                       np.asarray(labels, dtype=np.int64))
    if path is not None:
        from vitcli.core.io import atomic_write

        try:
            atomic_write(path, lambda f: np.savez(f, counts=index.counts, id_data=index.ids.data,
                                                  id_offsets=index.ids.offsets, labels=index.labels))
        except OSError:
            pass  # a read-only cache only costs a re-read next time
    return index


def wids_descriptor(index: ShardIndex, base: str | None = None, name: str | None = None) -> dict:
    """A wids_version 1 descriptor of the index (urls relative to `base` when under it)."""
    shardlist = []
    for url, n in zip(index.urls, index.counts.tolist()):
        if base and is_local(url):
            url = os.path.relpath(local_path(url), base)
        entry = {"url": url, "nsamples": n}
        if is_local(url if not base else os.path.join(base, url)):
            full = os.path.join(base, url) if base else local_path(url)
            if os.path.isfile(full):
                entry["filesize"] = os.path.getsize(full)
        shardlist.append(entry)
    return {"wids_version": 1, **({"name": name} if name else {}), "shardlist": shardlist}
