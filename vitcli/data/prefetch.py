"""Batches moved to the training device one step ahead of the step that uses them.

On CUDA the copy of batch k+1 runs on a side stream while the step computes batch
k (the host tensors come pinned from the DataLoader, so the copies are truly
asynchronous); the main stream waits on that copy only when it takes the batch.
On any other device this is a plain `.to(device)` per batch.

Not timm.data.PrefetchLoader: it expects uint8 batches to normalize on the device and draws
RandomErasing there from the unseeded global `random` (no exact resume), while vitcli's file
transforms normalize and erase each sample inside that sample's seeded block (data/files.py),
so PrefetchLoader would add only a no-op normalization pass.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import torch


def device_batches(batches: Iterable[tuple[Any, ...]], device: Any) -> Iterator[tuple[Any, ...]]:
    """Yield each tuple of tensors of `batches` on `device`, prefetched on a side stream on CUDA."""
    device = torch.device(device)
    if device.type != "cuda":
        for batch in batches:
            yield tuple(t.to(device) for t in batch)
        return
    stream = torch.cuda.Stream(device)

    def start_copy(batch):
        with torch.cuda.stream(stream):
            return tuple(t.to(device, non_blocking=True) for t in batch)

    it = iter(batches)
    ahead = None
    for batch in it:
        ahead = start_copy(batch)
        break
    while ahead is not None:
        current = torch.cuda.current_stream(device)
        current.wait_stream(stream)
        for t in ahead:
            t.record_stream(current)  # the side stream allocated it; the main stream uses it
        ready, ahead = ahead, None
        for batch in it:
            ahead = start_copy(batch)  # overlaps the step that consumes `ready`
            break
        yield ready
