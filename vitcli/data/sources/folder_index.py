"""A compact, cached index of a class-per-folder image tree (ImageNet layout, a million files).

Per sample the index holds its path relative to the dataset root (bytes in one shared
buffer, plus an 8-byte offset) and its label (int64): no Python object per sample, so
1.28M ImageNet files take about 55 MB instead of the ~200 bytes per sample of a list of
(path, label) tuples. The tree is read with `os.scandir` on bytes names (no stat per file,
no decode), one class folder at a time, and sorted per class.

The index is cached (`<cache dir>/index/<key>.npz`, numpy arrays only, never a pickle)
together with the modification time of every folder it read. A folder's mtime changes
when an entry is added to it, removed or renamed, so re-stating those folders (about
1,000 for ImageNet) tells whether the cache still holds: a second run does not rescan.
Folders modified during the last seconds before a scan are not trusted (git's "racy"
rule: a file added within the same timestamp tick would go unseen), and such an index
is not cached. Under DDP only rank 0 reads the tree; the others receive its index (rank0_only).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch.distributed as torch_dist

from vitcli.core import dist
from vitcli.core.errors import UserError
from vitcli.core.io import atomic_write, cache_dir  # noqa: F401  (cache_dir: its users import it from here)

INDEX_VERSION = 1
T = TypeVar("T")
RACY_NS = 2_000_000_000  # folders touched this close to the scan are not cached (timestamp granularity)


class StringColumn(Sequence[str]):
    """N strings held in one uint8 buffer with N+1 offsets, each read back as `prefix + string`.

    Two columns may share one buffer with different prefixes (a split's absolute paths and its
    root-relative ids).

    >>> col = StringColumn.from_bytes([b"train/a/1.jpg", b"train/b/2.jpg"], prefix="/data/")
    >>> col[1], len(col), col.take(np.array([1]))[0]
    ('/data/train/b/2.jpg', 2, '/data/train/b/2.jpg')
    """

    def __init__(self, data: np.ndarray, offsets: np.ndarray, prefix: str = ""):
        self.data, self.offsets, self.prefix = data, offsets, prefix

    @classmethod
    def from_bytes(cls, items: list[bytes], prefix: str = "") -> "StringColumn":
        lengths = np.fromiter(map(len, items), dtype=np.int64, count=len(items))
        offsets = np.zeros(len(items) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(np.frombuffer(b"".join(items), dtype=np.uint8), offsets, prefix)

    def with_prefix(self, prefix: str) -> "StringColumn":
        return StringColumn(self.data, self.offsets, prefix)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.prefix + self.data[self.offsets[i]:self.offsets[i + 1]].tobytes().decode("utf-8", "surrogateescape")

    def __iter__(self) -> Iterator[str]:
        data, off, prefix = self.data.tobytes(), self.offsets.tolist(), self.prefix
        for a, b in zip(off[:-1], off[1:]):
            yield prefix + data[a:b].decode("utf-8", "surrogateescape")

    def take(self, idx: np.ndarray) -> "StringColumn":
        """The strings at `idx`, gathered into a new buffer (vectorised: no Python loop)."""
        idx = np.asarray(idx, dtype=np.int64)
        starts, lengths = self.offsets[idx], self.offsets[idx + 1] - self.offsets[idx]
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        gather = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
        return StringColumn(self.data[gather], offsets, self.prefix)

    @property
    def nbytes(self) -> int:
        return self.data.nbytes + self.offsets.nbytes


@dataclass
class FolderIndex:
    """Every image of a split: root-relative paths (`train/<class>/x.jpg`) and labels."""
    rel_paths: StringColumn
    labels: np.ndarray  # (N,) int64
    dirs: StringColumn  # every folder read, absolute
    dir_mtimes: np.ndarray  # (D,) int64 ns, as seen when the tree was read

    @property
    def nbytes(self) -> int:
        """Memory per sample kept: path bytes + offsets + labels."""
        return self.rel_paths.nbytes + self.labels.nbytes


def scan_class_folders(root: Path, split: str, folders: Sequence[str], extensions: Sequence[str]) -> FolderIndex:
    """Read `root/split/<folder>/**` for each class folder in label order (missing ones are empty).

    Files are kept when their lower-cased suffix is in `extensions`; subfolders are walked
    (symlinks followed, as timm does); names are sorted within each class.
    """
    exts = tuple(e.lower().encode() for e in extensions)
    base = os.fsencode(root / split)
    prefix = os.fsencode(split) + b"/"
    names: list[bytes] = []
    counts = np.zeros(len(folders), dtype=np.int64)
    dirs: list[bytes] = [base]
    mtimes: list[int] = [os.stat(base).st_mtime_ns]
    for label, folder in enumerate(folders):
        top = os.path.join(base, os.fsencode(folder))
        found = _walk_images(top, prefix + os.fsencode(folder) + b"/", exts, dirs, mtimes)
        found.sort()
        names.extend(found)
        counts[label] = len(found)
    labels = np.repeat(np.arange(len(folders), dtype=np.int64), counts)
    return FolderIndex(StringColumn.from_bytes(names), labels, StringColumn.from_bytes(dirs),
                       np.asarray(mtimes, dtype=np.int64))


def _walk_images(top: bytes, rel: bytes, exts: tuple[bytes, ...], dirs: list[bytes], mtimes: list[int]) -> list[bytes]:
    """Root-relative names of the image files under `top` (recursive); records each folder read."""
    found: list[bytes] = []
    stack = [(top, rel)]
    while stack:
        folder, rel_folder = stack.pop()
        try:
            mtime = os.stat(folder).st_mtime_ns
            entries = os.scandir(folder)
        except (FileNotFoundError, NotADirectoryError):
            continue
        dirs.append(folder)
        mtimes.append(mtime)
        with entries:
            for entry in entries:
                name = entry.name
                if name.lower().endswith(exts):
                    if entry.is_file():
                        found.append(rel_folder + name)
                elif entry.is_dir():
                    stack.append((entry.path, rel_folder + name + b"/"))
    return found


def index_path(cache: Path, root: Path, split: str, folders: Sequence[str], extensions: Sequence[str]) -> Path:
    key = json.dumps([INDEX_VERSION, str(root.resolve()), split, list(folders), sorted(extensions)])
    return cache / "index" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npz"


def load_cached(path: Path) -> FolderIndex | None:
    """The cached index when every folder it read still has the mtime it had, else None."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError):
        return None
    index = FolderIndex(StringColumn(arrays["path_data"], arrays["path_offsets"]), arrays["labels"],
                        StringColumn(arrays["dir_data"], arrays["dir_offsets"]), arrays["dir_mtimes"])
    for folder, mtime in zip(index.dirs, index.dir_mtimes.tolist()):
        try:
            if os.stat(os.fsencode(folder)).st_mtime_ns != mtime:
                return None
        except OSError:
            return None
    return index


def save_index(path: Path, index: FolderIndex, scanned_at_ns: int) -> bool:
    """Cache the index unless a folder changed too close to the scan to be trusted; True when written."""
    if len(index.dir_mtimes) and int(index.dir_mtimes.max()) > scanned_at_ns - RACY_NS:
        return False

    arrays = dict(path_data=index.rel_paths.data, path_offsets=index.rel_paths.offsets, labels=index.labels,
                  dir_data=index.dirs.data, dir_offsets=index.dirs.offsets, dir_mtimes=index.dir_mtimes)
    try:
        atomic_write(path, lambda f: np.savez(f, **arrays))
    except OSError:
        return False  # a read-only cache is not an error: the next run scans again
    return True


def index_folders(root: Path, split: str, folders: Sequence[str], extensions: Sequence[str],
                  cache: Path | None) -> tuple[FolderIndex, str]:
    """The split's index, from the cache when still valid (else scanned and cached).

    Returns the index and where it came from: 'cache', 'scan' or 'scan (not cached)'."""
    path = index_path(cache, root, split, folders, extensions) if cache is not None else None
    if path is not None and path.is_file():
        cached = load_cached(path)
        if cached is not None:
            return cached, "cache"
    started = time.time_ns()
    index = scan_class_folders(root, split, folders, extensions)
    if path is None:
        return index, "scan"
    return index, "scan" if save_index(path, index, started) else "scan (not cached)"


def rank0_only(build: Callable[[], T]) -> T:
    """`build()` on DDP rank 0 only, its result broadcast to the other ranks (alone: just build()).

    The other ranks do not touch the filesystem, so a million-file tree is read once per job,
    whether or not the cache dir is shared between nodes. When build() fails on rank 0, every
    rank raises the same UserError at once (rank 0 its own error), instead of the others waiting
    in the broadcast until its timeout."""

    if dist.world_size() == 1 or not dist.initialized():
        return build()

    failure: BaseException | None = None
    if dist.rank() == 0:
        try:
            box = [(build(), None)]
        except Exception as err:  # every rank must hear of it: they are waiting in the broadcast
            failure = err
            box = [(None, str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}")]
    else:
        box = [None]
    torch_dist.broadcast_object_list(box, src=0)  # our own processes' numpy arrays, not user data
    result, error = box[0]
    if failure is not None:
        raise failure
    if error is not None:
        raise UserError(error)
    return result
