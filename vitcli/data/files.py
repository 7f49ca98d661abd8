"""Image files on disk: a split of (path, label, id), PIL decoding, and the loader.

Files that cannot be decoded (corrupt, truncated) are skipped and counted: the
loader warns once per split with the count and the first few paths, the count
lands in the run's summary (`skipped_files`), and a split where more than
`max_bad_fraction` fails stops with a UserError.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from vitcli.data.arrays import EpochBatching
from vitcli.errors import UserError

log = logging.getLogger("vitcli")

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")  # compared lower-case (ImageNet uses .JPEG)
DECODE_ERRORS = (OSError, SyntaxError, ValueError)  # PIL's UnidentifiedImageError is an OSError


@dataclass
class FileSplit:
    paths: list[str]  # absolute paths
    labels: np.ndarray  # (N,) int64, -1 when unknown
    ids: list[str]  # split-prefixed relative paths, e.g. val/00000001.jpg

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, idx: np.ndarray) -> "FileSplit":
        return FileSplit([self.paths[i] for i in idx], self.labels[idx], [self.ids[i] for i in idx])


def load_rgb(path: str):
    """Decode an image fully as RGB (grayscale, CMYK, palette and alpha converted)."""
    from PIL import Image

    with Image.open(path) as img:
        img.load()  # decode now so truncation raises here, not later in a transform
        return img.convert("RGB")


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
        return ", ".join(f"{p} ({e})" for p, e in list(self.paths.items())[:k])

    def warn_new(self) -> None:
        if len(self.paths) > self.warned:
            log.warning(f"skipped {len(self.paths)} unreadable file(s) in split '{self.split}': {self.sample()}")
            self.warned = len(self.paths)


class ImageFileDataset:
    """(index) -> (image tensor or None when unreadable, label, index, error)."""

    def __init__(self, split: FileSplit, transform: Callable):
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        try:
            img = load_rgb(self.split.paths[i])
        except DECODE_ERRORS as err:
            return None, int(self.split.labels[i]), i, f"{type(err).__name__}: {err}"[:120]
        return self.transform(img), int(self.split.labels[i]), i, None


def collate_skipping(batch):
    """Stack the decodable samples; report the indices of the others."""
    import torch

    ok = [b for b in batch if b[0] is not None]
    bad = [(b[2], b[3]) for b in batch if b[0] is None]
    x = torch.stack([b[0] for b in ok]) if ok else None
    y = torch.tensor([b[1] for b in ok], dtype=torch.int64)
    return x, y, bad


class FileLoader(EpochBatching):
    """Batches of (x float NCHW normalized, y int64) from image files, on `device`.

    The epoch order is the same seeded permutation as ArrayLoader's; worker
    augmentation randomness comes from a generator seeded by (seed, epoch)
    (with num_workers=0 the transforms draw from torch's global, seeded RNG).
    """

    def __init__(self, split: FileSplit, transform: Callable, batch_size: int, bad: BadFiles,
                 shuffle: bool = False, drop_last: bool = False, num_workers: int = 0, seed: int = 0,
                 device: str = "cpu"):
        import torch

        self.dataset = ImageFileDataset(split, transform)
        self.split = split
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.num_workers, self.seed, self.bad = num_workers, seed, bad
        self.device = torch.device(device)

    @property
    def ids(self) -> list[str]:
        return [i for i, p in zip(self.split.ids, self.split.paths) if p not in self.bad.paths]

    def batches(self) -> list[list[int]]:
        from vitcli.data.arrays import epoch_seed, shard_order

        n = len(self.split)
        rng = np.random.default_rng(epoch_seed(self.seed, self.epoch))
        order = shard_order(rng.permutation(n) if self.shuffle else np.arange(n), self.rank, self.world, self.pad)
        # sorted within a batch, as ArrayLoader does, so both paths yield the same batches
        return [np.sort(order[s * self.batch_size:(s + 1) * self.batch_size]).tolist()
                for s in range(self.start_step, len(self))]

    def __iter__(self) -> Iterator[Any]:
        import torch
        from torch.utils.data import DataLoader

        from vitcli.data.arrays import epoch_seed

        gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, 10_000 + self.start_step, self.rank))
        loader = DataLoader(self.dataset, batch_sampler=self.batches(), num_workers=self.num_workers,
                            collate_fn=collate_skipping, generator=gen, pin_memory=self.device.type == "cuda",
                            persistent_workers=False)
        self.start_step = 0
        try:
            for x, y, bad in loader:
                for i, err in bad:
                    self.bad.add(self.split.paths[i], err)
                if x is None:
                    continue
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        finally:
            self.bad.warn_new()
