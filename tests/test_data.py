"""Bundled datasets and the batched array loader."""

from __future__ import annotations

import numpy as np
import torch

from vitcli.data import create_data
from vitcli.data.batch_transforms import (
    create_batch_augment,
    hflip,
    random_crop,
    random_resized_crop,
)
from vitcli.data.sources.digits import load_digits_split
from vitcli.data.sources.synthetic import make_synthetic


def test_digits_are_the_real_sklearn_set():
    split, names = load_digits_split()
    assert split.images.shape == (1797, 8, 8, 3) and split.images.dtype == np.uint8
    assert names == [str(i) for i in range(10)]
    assert np.bincount(split.labels).min() >= 170


def test_digits_split_is_stratified_80_20_and_fixed_by_seed(compose):
    cfg = compose("train")
    dm = create_data(cfg)
    train, val = dm.loader("train").split, dm.loader("val").split
    assert len(train) + len(val) == 1797
    assert abs(len(val) / 1797 - 0.2) < 0.01
    assert not set(train.ids) & set(val.ids)
    per_class = np.bincount(val.labels) / np.bincount(np.concatenate([train.labels, val.labels]))
    assert per_class.min() > 0.17 and per_class.max() < 0.23
    assert create_data(cfg).loader("val").split.ids == val.ids
    cfg.data.split_seed = 1
    assert create_data(cfg).loader("val").split.ids != val.ids


def test_loader_upscales_and_normalizes(compose):
    cfg = compose("train", ["data.img_size=24"])
    x, y = next(iter(create_data(cfg).loader("val")))
    assert x.shape == (128, 3, 24, 24) and x.dtype == torch.float32
    assert y.dtype == torch.int64
    assert -1.01 <= x.min() and x.max() <= 1.01  # mean/std 0.5 -> [-1, 1]


def test_train_order_depends_on_epoch_and_resumes_mid_epoch(compose):
    cfg = compose("train", ["augmentation=basic"])
    loader = create_data(cfg).loader("train")
    loader.set_epoch(0)
    epoch0 = [b for b in loader]
    loader.set_epoch(1)
    first1 = next(iter(loader))
    assert not torch.equal(epoch0[0][1], first1[1])
    loader.set_epoch(0, start_step=3)
    resumed = list(loader)
    assert len(resumed) == len(epoch0) - 3
    for (xa, ya), (xb, yb) in zip(epoch0[3:], resumed):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_synthetic_is_deterministic_sized_and_balanced():
    a, names = make_synthetic(300, 6, 20, seed=3)
    b, _ = make_synthetic(300, 6, 20, seed=3)
    assert a.images.shape == (300, 20, 20, 3)
    assert np.array_equal(a.images, b.images) and len(names) == 6
    assert np.bincount(a.labels).tolist() == [50] * 6


def test_synthetic_easy_is_linear_and_hard_is_not():
    """easy: a linear probe on pixels solves it; hard (the default): it does not (class colours
    are gone, orientation is jittered), so a model must learn oriented features over epochs."""
    from sklearn.linear_model import LogisticRegression

    scores = {}
    for difficulty in ("easy", "hard"):
        split, _ = make_synthetic(600, 5, 16, seed=0, difficulty=difficulty)
        X = split.images.reshape(600, -1) / 255.0
        clf = LogisticRegression(max_iter=300).fit(X[:450], split.labels[:450])
        scores[difficulty] = clf.score(X[450:], split.labels[450:])
    assert scores["easy"] > 0.8 and scores["hard"] < 0.5, scores


def test_batch_ops_shapes_and_determinism():
    x = torch.rand(8, 3, 16, 16) * 255
    for op in (random_crop(4), random_resized_crop([0.3, 1.0]), hflip(0.5)):
        a = op(x.clone(), torch.Generator().manual_seed(0))  # ops may work in place
        b = op(x.clone(), torch.Generator().manual_seed(0))
        assert a.shape == x.shape and torch.equal(a, b)


def test_random_crop_is_a_shift_with_zero_fill():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(64, 3, 1, 1)
    out = random_crop(1)(x, torch.Generator().manual_seed(0))
    assert not torch.equal(out, x.expand_as(out))  # some samples shifted
    for img in out[:, 0]:
        nonzero = img[img > 0]
        assert set(nonzero.tolist()) <= set(range(16))


def test_hflip_flips_about_half():
    x = torch.arange(4.0).view(1, 1, 1, 4).repeat(1000, 1, 1, 1)
    out = hflip(0.5)(x, torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0, 0] == 3).float().mean().item()
    assert 0.4 < flipped < 0.6


def test_augmentation_none_builds_no_pipeline(compose):
    for preset, pipeline in (("none", False), ("basic", True)):
        cfg = compose("train", [f"augmentation={preset}"])
        assert (create_batch_augment(cfg.augmentation, cfg.data) is not None) == pipeline


def test_too_few_samples_for_a_stratified_split_is_a_user_error(compose):
    import pytest

    from vitcli.core.errors import UserError

    with pytest.raises(UserError, match="val_fraction"):
        create_data(compose("train", ["data=synthetic", "data.num_samples=40"]))


def test_cpu_fast_path_equals_op_by_op_augmentation():
    """The fused gather+crop+flip copy must give exactly what the ops give one by one."""
    import pytest  # noqa: F401

    from vitcli.data.arrays import ArrayLoader, ArraySplit, epoch_seed
    from vitcli.data.batch_transforms import BatchAugment, color_jitter

    imgs = np.random.default_rng(0).integers(0, 255, (50, 20, 20, 3), dtype=np.uint8)
    split = ArraySplit(imgs, np.arange(50) % 5, [str(i) for i in range(50)])
    for ops in ([random_crop(4), hflip(0.5)], [hflip(0.5)], [random_crop(3)],
                [random_crop(2), hflip(0.5), color_jitter(0.3)]):
        aug = BatchAugment(ops)
        loader = ArrayLoader(split, 16, 20, [0.5] * 3, [0.5] * 3, shuffle=True, augment=aug, seed=3)
        idx = np.sort(loader.order()[:16])
        fast, _ = loader.batch(idx, 0)
        gen = torch.Generator().manual_seed(epoch_seed(3, 0, 1))
        x = aug(torch.from_numpy(imgs[idx]).permute(0, 3, 1, 2).contiguous(), gen)
        assert torch.equal(fast, x.float().sub_(loader.mean).div_(loader.std))


def test_small_arrays_are_resized_once_with_the_pixels_each_batch_would_get():
    """On the CPU an in-memory split of another size is resized to img_size once (ArrayLoader.images):
    every batch, augmented (resized crops: the default recipe) or not, is the one resizing each batch gives."""
    from vitcli.data.arrays import ArrayLoader, ArraySplit
    from vitcli.data.batch_transforms import BatchAugment

    imgs = np.random.default_rng(0).integers(0, 255, (40, 8, 8, 3), dtype=np.uint8)
    split = ArraySplit(imgs, np.arange(40) % 4, [str(i) for i in range(40)])
    for augment in (None, BatchAugment([random_resized_crop((0.75, 1.0), (0.85, 1.18))]), BatchAugment([hflip(0.5)])):
        once = ArrayLoader(split, 16, 32, [0.5] * 3, [0.5] * 3, shuffle=True, augment=augment, seed=3)
        each = ArrayLoader(split, 16, 32, [0.5] * 3, [0.5] * 3, shuffle=True, augment=augment, seed=3)
        each._images = imgs  # the per-batch resize
        assert once.images().shape == (40, 32, 32, 3)
        for epoch in (0, 1):
            once.set_epoch(epoch), each.set_epoch(epoch)
            for (xa, ya), (xb, yb) in zip(once, each, strict=True):
                assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_memory_mapped_arrays_are_not_resized_ahead(tmp_path):
    from vitcli.data.arrays import ArrayLoader, ArraySplit

    images = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=(6, 8, 8, 3))
    loader = ArrayLoader(ArraySplit(images, np.zeros(6, np.int64), list("abcdef")), 3, 16, [0.5] * 3, [0.5] * 3)
    assert loader.images() is images and next(iter(loader))[0].shape == (3, 3, 16, 16)
