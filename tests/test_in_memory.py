"""data.format=memory / auto: a folder of img_size-square images decoded once into memory gives
the file path's samples, ids, labels and data identity; anything else stays on disk (auto) or
stops with one line (memory)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from vitcli.core.errors import UserError
from vitcli.data import create_data
from vitcli.data import in_memory
from vitcli.data.arrays import ArrayLoader
from vitcli.data.module import data_identity

CLASSES = ["Cat", "dog", "ümlaut"]  # upper-case and non-ASCII folder names
SIZE = 12


def write_kit(root, per_class=(6, 2), size=SIZE):
    """root/{train,val}/<class>/<n>.png of random pixels (so every image differs)."""
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "val"), per_class):
        for c in CLASSES:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"IMG_{i:03d}.PNG")
    return root


def cfg_for(compose, root, *extra):
    return compose("train", ["data=imagefolder", f"data.root={root}", f"data.img_size={SIZE}", "data.num_workers=0",
                             "augmentation=none", "data.batch_size=4", *extra])


@pytest.fixture
def kit(tmp_path, monkeypatch):
    monkeypatch.setenv("VITCLI_CACHE", str(tmp_path / "cache"))
    return write_kit(tmp_path / "folder")


def test_auto_holds_the_folder_in_memory_with_the_file_paths_samples(compose, kit):
    files = create_data(cfg_for(compose, kit, "data.format=files"))
    held = create_data(cfg_for(compose, kit))  # data.format=auto, the default
    assert held.info["data_format"] == "memory" and files.info["data_format"] == "files"
    splits = [k.removeprefix("skipped_files_") for k in held.info if k.startswith("skipped_files_")]
    decoded = sum(held.loader(s).split.images.nbytes for s in splits)
    assert held.info["memory_held_mib"] == pytest.approx(decoded / 2**20, abs=0.1)  # what is held, not the limit
    assert isinstance(held.loader("train"), ArrayLoader)
    assert held.class_names == files.class_names == CLASSES
    assert data_identity(held) == data_identity(files)  # a run may resume with either
    split = held.loader("train").split
    first = Image.open(kit / split.ids[0]).convert("RGB")
    assert np.array_equal(split.images[0], np.asarray(first))  # the decoded pixels, nothing resized
    for name in ("train", "val"):
        assert held.ids(name) == files.ids(name)
        batches = list(zip(files.loader(name), held.loader(name)))
        assert len(batches) == len(files.loader(name))
        for (xf, yf), (xm, ym) in batches:
            assert torch.equal(yf, ym)
            torch.testing.assert_close(xf, xm, atol=1e-5, rtol=0)


def test_an_image_of_another_size_keeps_the_files_or_stops_memory(compose, kit, caplog):
    Image.new("RGB", (SIZE + 2, SIZE)).save(kit / "val" / "dog" / "wide.png")
    with caplog.at_level(logging.INFO, logger="vitcli"):
        data = create_data(cfg_for(compose, kit))
    assert data.info["data_format"] == "files" and data.info["val_samples"] == 7
    assert "val/dog/wide.png is 14x12" in caplog.text
    with pytest.raises(UserError, match=r"data.format=memory needs every image at data.img_size \(12x12\): "
                                        r"val/dog/wide.png is 14x12; use data.format=files"):
        create_data(cfg_for(compose, kit, "data.format=memory"))


def test_a_first_image_of_another_size_decodes_nothing(compose, tmp_path, monkeypatch):
    root = write_kit(tmp_path / "big", size=SIZE + 4)
    monkeypatch.setattr(in_memory, "decode_split", lambda *a: pytest.fail("decoded a folder that cannot be held"))
    assert create_data(cfg_for(compose, root)).info["data_format"] == "files"


@pytest.mark.parametrize("setting", ["data.memory_mb=0.001", "augmentation.crop_pct=0.875"])
def test_auto_keeps_files_over_the_memory_limit_or_with_an_eval_crop(compose, kit, setting):
    assert create_data(cfg_for(compose, kit, setting)).info["data_format"] == "files"


def test_memory_refuses_an_eval_crop_it_would_not_apply(compose, kit):
    with pytest.raises(UserError, match=r"data.format=memory: augmentation.crop_pct=0.875 crops the eval images"):
        create_data(cfg_for(compose, kit, "data.format=memory", "augmentation.crop_pct=0.875"))


def test_memory_limit_is_only_for_auto(compose, kit):
    data = create_data(cfg_for(compose, kit, "data.format=memory", "data.memory_mb=0.001"))
    assert data.info["data_format"] == "memory"


def test_unreadable_files_are_skipped_and_counted(compose, kit):
    (kit / "train" / "Cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    data = create_data(cfg_for(compose, kit, "data.max_bad_fraction=0.1"))
    assert data.info["data_format"] == "memory"
    assert data.info["skipped_files_train"] == 1 and data.info["skipped_files"] == 1
    assert data.info["train_samples"] == 18 and "train/Cat/broken.png" not in data.ids("train")
    with pytest.raises(UserError, match=r"more than 0% of 19 files in train cannot be decoded, e\.g\. .*broken\.png"):
        create_data(cfg_for(compose, kit, "data.max_bad_fraction=0"))


def test_a_run_trains_from_memory_and_records_it(train_tiny, read_summary, kit, tmp_path):
    run = tmp_path / "run"
    train_tiny(run, "data=imagefolder", f"data.root={kit}", f"data.img_size={SIZE}", "data.batch_size=6",
               "data.num_workers=0", "trainer.epochs=1")
    summary = read_summary(run)
    assert summary["status"] == "completed" and summary["data_format"] == "memory"
    assert summary["train_samples"] == 18 and summary["skipped_files"] == 0


def test_a_worker_pool_decodes_the_same_and_stops_at_another_size(compose, kit, monkeypatch):
    alone = create_data(cfg_for(compose, kit))
    monkeypatch.setattr(in_memory, "POOL_FROM", 1)  # large datasets decode in a pool of data.num_workers
    pooled = create_data(cfg_for(compose, kit, "data.num_workers=2"))
    for name in ("train", "val"):
        assert np.array_equal(pooled.loader(name).split.images, alone.loader(name).split.images)
        assert pooled.ids(name) == alone.ids(name)
    Image.new("RGB", (SIZE, SIZE + 1)).save(kit / "train" / "Cat" / "tall.png")
    assert create_data(cfg_for(compose, kit, "data.num_workers=2")).info["data_format"] == "files"
