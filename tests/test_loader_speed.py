"""The file loader that keeps up: persistent workers, per-sample seeded augmentation
(same batches for any worker count and after a mid-epoch resume), num_workers=auto,
and device prefetch."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from vitcli.core.errors import UserError
from vitcli.data.arrays import epoch_seed
from vitcli.data.files import BadFiles, FileLoader, FileSplit, resolve_num_workers

N, BS = 14, 4


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> FileSplit:
    """N 8x8 PNGs whose pixel value encodes their index (lossless, so x tells which sample it is)."""
    root = tmp_path_factory.mktemp("files")
    paths = []
    for i in range(N):
        path = root / f"{i:02d}.png"
        Image.fromarray(np.full((8, 8, 3), 10 * (i + 1), np.uint8)).save(path)
        paths.append(str(path))
    return FileSplit(paths, np.arange(N) % 3, [f"train/{i:02d}.png" for i in range(N)])


def index_of(x: torch.Tensor) -> list[int]:
    return [round(v) // 10 - 1 for v in (x.amax(dim=(1, 2, 3)) * 255).tolist()]


def pid_transform(img):
    return torch.full((3, 2, 2), float(os.getpid()), dtype=torch.float64)


def shift_transform():
    from torchvision import transforms as T

    return T.Compose([T.RandomCrop(8, padding=3), T.ToTensor()])


def make(split, transform, workers, seed=7) -> FileLoader:
    return FileLoader(split, transform, BS, BadFiles("train", len(split), {}), shuffle=True, drop_last=True,
                      num_workers=workers, seed=seed)


def epoch(loader: FileLoader, e: int, start: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(e, start)
    return list(loader)


def test_workers_persist_across_epochs(split):
    loader = make(split, pid_transform, workers=2)
    pids = [{int(p) for x, _ in epoch(loader, e) for p in x.flatten().tolist()} for e in range(3)]
    assert pids[0] == pids[1] == pids[2] and len(pids[0]) == 2 and os.getpid() not in pids[0]


def test_batch_order_is_the_seeded_epoch_permutation(split):
    from torchvision import transforms as T

    loader = make(split, T.ToTensor(), workers=2)
    for e in range(2):
        order = np.random.default_rng(epoch_seed(7, e)).permutation(N)
        expected = [sorted(order[s * BS:(s + 1) * BS].tolist()) for s in range(N // BS)]
        got = [index_of(x) for x, _ in epoch(loader, e)]
        assert got == expected
    resumed = [index_of(x) for x, _ in epoch(loader, 1, start=2)]
    assert resumed == expected[2:]


def test_augmentation_is_the_same_for_any_worker_count_and_after_a_resume(split):
    runs = {w: make(split, shift_transform(), workers=w) for w in (0, 2)}
    full = {w: [epoch(runs[w], e) for e in range(2)] for w in runs}
    for e in range(2):
        for (x0, y0), (x2, y2) in zip(full[0][e], full[2][e], strict=True):
            assert torch.equal(x0, x2) and torch.equal(y0, y2)
    assert not torch.equal(full[0][0][0][0], full[0][1][0][0])  # a new epoch draws new crops
    for w in runs:  # restart mid-epoch on a fresh loader (as a resumed run does)
        resumed = epoch(make(split, shift_transform(), workers=w), 1, start=1)
        assert all(torch.equal(a[0], b[0]) for a, b in zip(resumed, full[w][1][1:], strict=True))


def test_main_process_rng_is_untouched_by_seeded_augmentation(split):
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    epoch(make(split, shift_transform(), workers=0), 0)
    assert torch.equal(torch.rand(4), expected)


@pytest.mark.parametrize("cores,ranks,expected", [(2, None, 1), (8, "2", 3), (64, None, 16), (1, None, 0)])
def test_num_workers_auto_uses_the_cores_per_rank(monkeypatch, cores, ranks, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    if ranks:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", ranks)
    else:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert resolve_num_workers("auto") == expected


def test_num_workers_counts_and_bad_values():
    assert resolve_num_workers(0) == 0 and resolve_num_workers("3") == 3
    for bad in ("-1", "many", 1.5):
        with pytest.raises(UserError, match="data.num_workers"):
            resolve_num_workers(bad)


def test_file_datasets_default_to_auto_workers(compose):
    assert compose("train", ["data=miniplaces"]).data.num_workers == "auto"
