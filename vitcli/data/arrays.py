"""In-memory / memory-mapped image arrays and the batched loader that feeds them.

An `ArraySplit` holds uint8 images (N, H, W, 3), int64 labels (-1 when unknown)
and one id per sample. Digits, synthetic data and packed datasets are all
ArraySplits, so they share one loader: batches are gathered by index, moved to
the training device, then resized, augmented and normalized there as whole
batches (no per-sample Python, no worker processes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vitcli.data import batch_transforms as BT
from vitcli.data.split_cache import cached_stratified_split


@dataclass
class ArraySplit:
    images: np.ndarray  # (N, H, W, 3) uint8, may be a np.memmap
    labels: np.ndarray  # (N,) int64, -1 when unknown
    ids: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def epoch_seed(seed: int, epoch: int, step: int = 0, rank: int = 0) -> int:
    """A seed that depends only on (seed, epoch, step[, DDP rank]): resumable, worker-independent."""
    return int(np.random.SeedSequence([seed, epoch, step] + ([rank] if rank else [])).generate_state(1)[0])


def shard_order(order: np.ndarray, rank: int, world: int, pad: bool) -> np.ndarray:
    """This DDP rank's share of an epoch order, taken as torch's DistributedSampler does: every
    world-th index from `rank`. pad=True wraps around so every rank gets as many samples (equal
    step counts in training); pad=False repeats nothing (evaluation counts each sample once)."""
    if world == 1:
        return order
    if pad:
        order = np.resize(order, -(-len(order) // world) * world)
    return order[rank::world]


def shard_size(n: int, rank: int, world: int, pad: bool) -> int:
    return -(-n // world) if pad else len(range(rank, n, world))


# in-memory splits up to this size (at img_size) are resized once, not in every batch (ArrayLoader.images)
RESIZE_ONCE_BYTES = 512 << 20


class EpochBatching:
    """What every vitcli loader shares: the position in the epoch (for exact resume)
    and the DDP shard. Subclasses set split, batch_size, drop_last."""

    rank, world, pad = 0, 1, True  # DDP shard (see shard())
    epoch = start_step = 0
    balance_labels: np.ndarray | None = None  # data.class_balance=sampler (see balance())

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def balance(self, labels: np.ndarray) -> None:
        """Draw classes evenly each epoch (data/balance.py) instead of a plain permutation."""
        self.balance_labels = np.asarray(labels)

    def epoch_order(self) -> np.ndarray:
        """This epoch's shuffled order of the whole split, seeded by (seed, epoch) only."""
        rng = np.random.default_rng(epoch_seed(self.seed, self.epoch))
        if self.balance_labels is not None:
            from vitcli.data.balance import balanced_order

            return balanced_order(self.balance_labels, rng)
        return rng.permutation(len(self.split))

    def shard(self, rank: int, world: int, pad: bool = True) -> None:
        """DistributedSampler semantics: disjoint shards of the same seeded epoch order."""
        self.rank, self.world, self.pad = rank, world, pad
        self.drop_last = self.drop_last and shard_size(len(self.split), rank, world, pad) > self.batch_size

    def __len__(self) -> int:
        n = shard_size(len(self.split), self.rank, self.world, self.pad)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


class ArrayLoader(EpochBatching):
    """Batches of (images float NCHW normalized, labels) from an ArraySplit.

    The order of an epoch is a permutation seeded by (seed, epoch); the
    augmentation of a batch is seeded by (seed, epoch, step). So an epoch can be
    started at any step (`start_step`) and yields exactly what it would have.
    Under DDP, `shard(rank, world)` makes each rank take its share of that order.
    """

    def __init__(
        self,
        split: ArraySplit,
        batch_size: int,
        img_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        shuffle: bool = False,
        drop_last: bool = False,
        augment: BT.BatchAugment | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ):
        self.split = split
        self.batch_size = batch_size
        self.img_size = img_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.augment = augment
        self.seed = seed
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1) * 255.0
        self.epoch = 0
        self.start_step = 0
        self._images: Any = None  # what batches are gathered from (images())

    def images(self) -> Any:
        """The images batches are gathered from. On the CPU an in-memory split of another size is
        resized to img_size once, with the resize each batch of each epoch would repeat (the same
        pixels: a uint8 resize of each image alone); memory-mapped splits stay on disk."""
        if self._images is None:
            images = self.split.images
            resize = (self.device.type == "cpu" and type(images) is np.ndarray
                      and images.shape[1:3] != (self.img_size, self.img_size)
                      and len(images) * self.img_size ** 2 * images.shape[-1] <= RESIZE_ONCE_BYTES)
            self._images = resize_all(images, self.img_size) if resize else images
        return self._images

    def order(self) -> np.ndarray:
        n = len(self.split)
        if not self.shuffle:
            return shard_order(np.arange(n), self.rank, self.world, self.pad)
        return shard_order(self.epoch_order(), self.rank, self.world, self.pad)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order()
        for step in range(self.start_step, len(self)):
            idx = np.sort(order[step * self.batch_size : (step + 1) * self.batch_size])
            yield self.batch(idx, step)
        self.start_step = 0

    def batch(self, idx: np.ndarray, step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.from_numpy(np.asarray(self.split.labels[idx], dtype=np.int64))
        source = self.images()
        native = source.shape[1:3] == (self.img_size, self.img_size)
        if self.augment is not None and self.device.type == "cpu" and native:
            # gather, NHWC->NCHW, crop and flip in one copy per sample (identical results)
            gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, step + 1, self.rank))
            x, rest = BT.gather_crop_flip(source, idx, self.augment.ops, gen)
            for op in rest:
                x = op(x, gen)
            x = x.float().sub_(self.mean).div_(self.std)
            return self.augment.post(x, gen), labels
        images = torch.from_numpy(np.ascontiguousarray(source[idx]))
        x = resize(images.to(self.device, non_blocking=True).permute(0, 3, 1, 2), self.img_size)
        x = x.contiguous()  # NCHW from here: per-channel ops on channels-last are ~4x slower on CPU
        gen = None
        if self.augment is not None:
            # draws on the CPU on every device (batch_transforms: no host sync for the draws)
            gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, step + 1, self.rank))
            x = self.augment(x, gen)
        # crop/flip may have run on uint8: convert once; the float copy is ours, so normalize in place
        x = x.float().sub_(self.mean).div_(self.std)
        if gen is not None:
            x = self.augment.post(x, gen)
        return x, labels.to(self.device, non_blocking=True)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """An NCHW image batch (0..255) at size x size: on the CPU uint8 channels-last (SIMD path, like
    PIL), elsewhere as floats; unchanged when it has that size."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x if x.device.type == "cpu" else x.float(), size=(size, size), mode="bilinear",
                         antialias=True, align_corners=False)


def resize_all(images: np.ndarray, size: int, chunk: int = 1024) -> np.ndarray:
    """Uint8 NHWC images resized to size x size on the CPU (as `resize` does each batch), a chunk at a time."""
    out = np.empty((len(images), size, size, images.shape[-1]), dtype=np.uint8)
    for start in range(0, len(images), chunk):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + chunk])).permute(0, 3, 1, 2)
        out[start:start + chunk] = resize(x, size).permute(0, 2, 3, 1).numpy()
    return out


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed stratified train/val indices (sorted) for a given seed: sklearn's train_test_split, cached
    between runs (split_cache.py) so that a repeated split does not load sklearn (~0.8 s)."""
    return cached_stratified_split(labels, val_fraction, seed)


def take(split: ArraySplit, idx: np.ndarray) -> ArraySplit:
    return ArraySplit(split.images[idx], split.labels[idx], [split.ids[i] for i in idx])


class IndexedRows:
    """A lazy row subset of a (memory-mapped) array: rows are read only when indexed."""
    def __init__(self, array: np.ndarray, idx: np.ndarray):
        self.array, self.idx = array, np.asarray(idx)
        self.shape = (len(self.idx), *array.shape[1:])
        self.dtype = array.dtype

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i):
        return self.array[self.idx[i]]


def subset(split: Any, idx: np.ndarray) -> Any:
    """Rows `idx` of an ArraySplit or FileSplit, lazily for memory-mapped images."""
    if not isinstance(split, ArraySplit):
        return split.subset(idx)
    if isinstance(split.images, np.memmap) or getattr(split.images, "filename", None):
        return ArraySplit(IndexedRows(split.images, idx), split.labels[idx], [split.ids[i] for i in idx])
    return take(split, idx)
