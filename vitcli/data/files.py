"""Image files on disk: a split of (path, label, id), PIL decoding, and the loader.

Files that cannot be decoded (corrupt, truncated) are skipped and counted: the
loader warns once per split with the count and the first few paths, the count
lands in the run's summary (`skipped_files`), and a split where more than
`max_bad_fraction` fails stops with a UserError.
"""

from __future__ import annotations

import glob
import logging
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from vitcli.core.errors import UserError, printable
from vitcli.core.rng import seeded
from vitcli.data.arrays import EpochBatching, epoch_seed, shard_order
from vitcli.data.prefetch import device_batches

log = logging.getLogger("vitcli")

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")  # compared lower-case (ImageNet uses .JPEG)
DECODE_ERRORS = (OSError, SyntaxError, ValueError)  # PIL's UnidentifiedImageError is an OSError


@dataclass
class FileSplit:
    """Image files of a split. paths / ids are lists, or StringColumns (folder_index.py: one byte
    buffer for a million paths) that share one buffer. Other sources (wds shards, hf datasets)
    offer the same fields, subset() and open(transform)."""

    paths: Sequence[str]  # absolute paths
    labels: np.ndarray  # (N,) int64, -1 when unknown
    ids: Sequence[str]  # split-prefixed relative paths, e.g. val/00000001.jpg

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, idx: np.ndarray) -> "FileSplit":
        return FileSplit(take(self.paths, idx), self.labels[idx], take(self.ids, idx))

    def open(self, transform: Callable) -> "ImageFileDataset":
        """The dataset that decodes sample i (what FileLoader's DataLoader reads)."""
        return ImageFileDataset(self, transform)


def take(column: Sequence[str], idx: np.ndarray) -> Sequence[str]:
    return column.take(idx) if hasattr(column, "take") else [column[i] for i in idx]


def load_rgb(path: str):
    """Decode an image fully as RGB (grayscale, CMYK, palette and alpha converted)."""
    with Image.open(path) as img:
        img.load()  # decode now so truncation raises here, not later in a transform
        return img.convert("RGB")


def find_image_files(pattern: str, setting: str = "images") -> list[Path]:
    """The user's own images: a file, every image under a folder (recursive) or a glob's image
    matches, sorted. Nothing found is a UserError naming `setting` (predict / explain images=)."""
    path = Path(pattern).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        found = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS]
        if not found:
            raise UserError(f"{setting}={pattern}: the folder holds no {'/'.join(IMG_EXTENSIONS)} files")
        return sorted(found)
    found = [Path(p) for p in glob.glob(str(path), recursive=True)
             if Path(p).is_file() and Path(p).suffix.lower() in IMG_EXTENSIONS]
    if not found:
        raise UserError(f"{setting}={pattern} matches no image file: no such file or folder, and no file matches it "
                        f"as a glob (give a file, a folder or a quoted glob such as {setting}='photos/*.jpg')")
    return sorted(found)


class BadFiles:
    """Files of one split that failed to decode; shared with the DataModule's info."""
    def __init__(self, split: str, total: int, info: dict, max_fraction: float = 0.01):
        self.split, self.total, self.info, self.max_fraction = split, total, info, max_fraction
        self.paths: dict[str, str] = {}  # path -> error
        self.warned = 0

    def add(self, path: str, error: str) -> None:
        self.paths[path] = error
        self.info[f"skipped_files_{self.split}"] = len(self.paths)
        self.info["skipped_files"] = sum(v for k, v in self.info.items() if k.startswith("skipped_files_"))
        if len(self.paths) > self.max_fraction * self.total:
            raise UserError(
                f"{len(self.paths)} of {self.total} files in split '{self.split}' could not be decoded "
                f"(more than {self.max_fraction:.0%}), e.g. {self.sample()}; check the dataset copy"
            )

    def sample(self, k: int = 3) -> str:
        return ", ".join(f"{printable(p)} ({printable(e)})" for p, e in list(self.paths.items())[:k])

    def warn_new(self) -> None:
        if len(self.paths) > self.warned:
            log.warning(f"skipped {len(self.paths)} unreadable file(s) in split '{self.split}': {self.sample()}")
            self.warned = len(self.paths)


class ImageFileDataset:
    """(index) or (index, seed) -> (image tensor or None when unreadable, label, index, error).

    With a seed, the transform draws its randomness (torch, `random`, numpy) from that
    seed alone, so a sample's augmentation does not depend on which worker decodes it,
    how many workers there are, or where the epoch was resumed. Subclasses for other
    storage (shards, hf datasets) override `read`."""

    def __init__(self, split: Any, transform: Callable):
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def read(self, i: int):
        """Sample i as an RGB PIL image; raises one of DECODE_ERRORS when it cannot be decoded."""
        return load_rgb(self.split.paths[i])

    def __getitem__(self, item):
        i, seed = item if isinstance(item, tuple) else (item, None)
        try:
            img = self.read(i)
        except DECODE_ERRORS as err:
            return None, int(self.split.labels[i]), i, f"{type(err).__name__}: {err}"[:120]
        if seed is None:
            return self.transform(img), int(self.split.labels[i]), i, None
        with seeded(seed):
            return self.transform(img), int(self.split.labels[i]), i, None


def collate_skipping(batch):
    """Stack the decodable samples; report the indices of the others."""
    ok = [b for b in batch if b[0] is not None]
    bad = [(b[2], b[3]) for b in batch if b[0] is None]
    x = torch.stack([b[0] for b in ok]) if ok else None
    y = torch.tensor([b[1] for b in ok], dtype=torch.int64)
    return x, y, bad


class EpochBatchSampler:
    """The batch_sampler of FileLoader's one DataLoader: each `iter()` (one per epoch, taken
    when the epoch starts) yields the loader's current epoch from its start_step, each
    sample paired with its augmentation seed. The list is built eagerly, so the epoch and
    start step are read when the epoch starts, before the loader rewinds start_step."""

    def __init__(self, loader: "FileLoader"):
        self.loader = loader

    def __iter__(self):
        return iter(self.loader.seeded_batches())

    def __len__(self) -> int:
        return len(self.loader) - self.loader.start_step


def resolve_num_workers(value: Any) -> int:
    """data.num_workers as a count: `auto` is the cores this process may use (its CPU
    affinity) shared among the node's ranks (LOCAL_WORLD_SIZE), minus one for the main
    process, capped at 16."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        return max(0, min(16, cores // ranks - 1))
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = -1
    if count < 0 or str(value).strip() != str(count):
        raise UserError(f"data.num_workers={value} is not a worker count; use auto, 0 (main process) or a "
                        "positive number")
    return count


class WorkerInit:
    """A DataLoader `worker_init_fn` that leaves the stop signals to the main process, then runs
    `inner` (a loader's own worker_init_fn). SLURM signals every process of a job step, a shell's
    Ctrl-C its whole process group, and torch's workers die of SIGTERM from anyone but their
    parent and of SIGUSR2's default action, failing the main process before it could save.

    SIGINT and SIGUSR2 are ignored. SIGTERM still ends a worker when the process that built the
    loader sends it (torch's shutdown, multiprocessing's exit), and is ignored from anyone else."""

    def __init__(self, inner: Callable[[int], None] | None = None):
        self.inner, self.owner = inner, os.getpid()  # built in the main process, pickled into workers

    def __call__(self, worker_id: int) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        if hasattr(signal, "sigwaitinfo"):  # (macOS has none: torch's own SIGTERM handler stays)
            # blocked, not ignored (an ignored signal is discarded, its sender unknown), and taken by a
            # thread that sees who sent it; threads started later inherit the mask
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            threading.Thread(target=_end_on_sigterm_from, args=(self.owner,), daemon=True).start()
        if self.inner is not None:
            self.inner(worker_id)


def _end_on_sigterm_from(owner: int) -> None:
    while True:
        if signal.sigwaitinfo({signal.SIGTERM}).si_pid == owner:
            os._exit(0)  # what torch's worker does on its parent's SIGTERM


class FileLoader(EpochBatching):
    """Batches of (x float NCHW normalized, y int64) from image files, on `device`.

    The epoch order is the same seeded permutation as ArrayLoader's. Each sample's
    augmentation is seeded by (seed, epoch, step, its place in the batch, rank), so it
    is the same for any num_workers and after a mid-epoch resume. One DataLoader is
    kept for the loader's life: its workers persist across epochs, batches come pinned
    on CUDA and reach the device one step ahead (data/prefetch.py).
    """

    def __init__(self, split: FileSplit, transform: Callable, batch_size: int, bad: BadFiles,
                 shuffle: bool = False, drop_last: bool = False, num_workers: Any = 0, seed: int = 0,
                 device: str = "cpu"):

        self.dataset = split.open(transform)
        self.split = split
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.num_workers, self.seed, self.bad = resolve_num_workers(num_workers), seed, bad
        self.device = torch.device(device)
        self._loader = None  # the DataLoader, built on first use

    @property
    def ids(self) -> list[str]:
        return [i for i, p in zip(self.split.ids, self.split.paths) if p not in self.bad.paths]

    def batches(self) -> list[list[int]]:

        n = len(self.split)
        order = shard_order(self.epoch_order() if self.shuffle else np.arange(n), self.rank, self.world, self.pad)
        # sorted within a batch, as ArrayLoader does, so both paths yield the same batches
        return [np.sort(order[s * self.batch_size:(s + 1) * self.batch_size]).tolist()
                for s in range(self.start_step, len(self))]

    def seeded_batches(self) -> list[list[tuple[int, int]]]:
        """batches() with each index paired with its sample's augmentation seed."""

        out = []
        for step, batch in enumerate(self.batches(), start=self.start_step):
            rng = np.random.default_rng(epoch_seed(self.seed, self.epoch, 10_000 + step, self.rank))
            out.append(list(zip(batch, rng.integers(0, 2**62, size=len(batch)).tolist())))
        return out

    def data_loader(self):
        """The one DataLoader (persistent workers when num_workers > 0)."""
        if self._loader is None:
            import torch
            from torch.utils.data import DataLoader

            self._loader = DataLoader(
                self.dataset, batch_sampler=EpochBatchSampler(self), num_workers=self.num_workers,
                collate_fn=collate_skipping, pin_memory=self.device.type == "cuda",
                persistent_workers=self.num_workers > 0, generator=torch.Generator().manual_seed(self.seed),
                worker_init_fn=WorkerInit(),  # SLURM signals every process: the workers leave stops to this one
            )
        return self._loader

    def host_batches(self, loader_iter) -> Iterator[Any]:
        """CPU batches of decodable samples; unreadable files are counted as they show up."""
        try:
            for x, y, bad in loader_iter:
                for i, err in bad:
                    self.bad.add(self.split.paths[i], err)
                if x is not None:
                    yield x, y
        finally:
            self.bad.warn_new()

    def __iter__(self) -> Iterator[Any]:

        loader_iter = iter(self.data_loader())  # takes this epoch's batches (from start_step) now
        self.start_step = 0
        yield from device_batches(self.host_batches(loader_iter), self.device)
