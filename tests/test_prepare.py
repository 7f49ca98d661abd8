"""`vitcli prepare` and data.format=packed: contents, atomic writes, reruns, same images as the file path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from jpeg_trees import make_miniplaces, write_corrupt

from vitcli.core.errors import UserError
from vitcli.data import create_data
from vitcli.data import pack as P
from vitcli.data.prepare import prepare


def cfg_for(compose, root, *extra):
    return compose("train", ["data=miniplaces", f"data.root={root}", "data.img_size=16", "data.num_workers=0",
                             "augmentation=none",  # the paths must give the very same pixels
                             "data.batch_size=8", *extra])


def pack(cfg, size=None, splits=None, overwrite=False):
    return prepare(cfg.data, size, splits, workers=1, overwrite=overwrite)


@pytest.fixture(scope="module")
def kit(compose, tmp_path_factory):
    root = tmp_path_factory.mktemp("kit") / "miniplaces"
    made = make_miniplaces(root, classes=4, per_class=5, val=2, test=3, size=16)
    pack(cfg_for(compose, root))
    return root, made


def test_manifest_and_arrays(kit):
    root, made = kit
    manifest = json.loads((root / "packed" / "manifest.json").read_text())
    assert manifest["format_version"] == P.FORMAT_VERSION and manifest["size"] == 16
    assert manifest["class_names"] == made["class_names"]
    assert {k: v["count"] for k, v in manifest["splits"].items()} == {"train": 20, "val": 8, "test": 3}
    assert manifest["splits"]["train"]["source_sizes"] == {"16x16": 20}
    images = np.load(root / "packed" / "train" / "images.npy", mmap_mode="r")
    assert images.shape == (20, 16, 16, 3) and images.dtype == np.uint8
    assert (root / "packed" / "val" / "ids.txt").read_text().splitlines() == made["val"]
    assert np.load(root / "packed" / "test" / "labels.npy").tolist() == [-1] * 3


def test_packed_and_file_paths_give_the_same_images(compose, kit):
    root, _ = kit
    files = create_data(cfg_for(compose, root, "data.format=files"))
    packed = create_data(cfg_for(compose, root, "data.format=packed"))
    assert isinstance(packed.loader("train").split.images, np.memmap)
    assert packed.class_names == files.class_names and packed.info["data_format"] == "packed"
    for split in ("train", "val", "test"):
        assert packed.ids(split) == files.ids(split)
        if split == "train":
            files.loader(split).set_epoch(1), packed.loader(split).set_epoch(1)
        batches = list(zip(files.loader(split), packed.loader(split)))
        assert len(batches) == len(files.loader(split))
        for (xf, yf), (xp, yp) in batches:
            assert torch.equal(yf, yp)
            torch.testing.assert_close(xf, xp, atol=1e-5, rtol=0)


def test_packed_minival_matches_the_file_minival(compose, kit):
    root, _ = kit
    extra = ("data.minival_fraction=0.2",)
    packed = create_data(cfg_for(compose, root, "data.format=packed", *extra))
    assert packed.ids("minival") == create_data(cfg_for(compose, root, "data.format=files", *extra)).ids("minival")
    x, _ = next(iter(packed.loader("minival")))
    assert x.shape == (4, 3, 16, 16)


def test_rerun_skips_finished_splits(compose, kit, caplog):
    root, _ = kit
    before = (root / "packed" / "train" / "images.npy").stat().st_mtime_ns
    with caplog.at_level("INFO", logger="vitcli"):
        pack(cfg_for(compose, root))
    assert (root / "packed" / "train" / "images.npy").stat().st_mtime_ns == before
    assert "train: already packed (20 images), skipping" in caplog.text
    with pytest.raises(UserError, match="different size"):
        pack(cfg_for(compose, root), size=8)


def test_killed_prepare_leaves_nothing_that_looks_complete(compose, tmp_path, monkeypatch):
    root = tmp_path / "kit"
    make_miniplaces(root, classes=2, per_class=4, val=2, test=0, size=16)
    cfg = cfg_for(compose, root)
    real, calls = P.decode, []

    def dies_in_val(job):
        calls.append(job)
        if "/val/" in job[0] and len(calls) > 10:
            raise KeyboardInterrupt  # the user pressed Ctrl-C half-way through val
        return real(job)

    monkeypatch.setattr(P, "decode", dies_in_val)
    with pytest.raises(KeyboardInterrupt):
        pack(cfg)
    out = root / "packed"
    assert list(json.loads((out / "manifest.json").read_text())["splits"]) == ["train"]
    assert not (out / "val").exists()  # only a hidden temp folder, never val/ itself
    with pytest.raises(UserError, match="no packed 'val' split"):
        create_data(cfg_for(compose, root, "data.format=packed"))
    monkeypatch.setattr(P, "decode", real)
    manifest = pack(cfg)
    assert manifest["splits"]["val"]["count"] == 4 and not (out / ".val.tmp").exists()


def test_prepare_resizes_and_skips_unreadable_files(compose, tmp_path):
    root = tmp_path / "kit"
    made = make_miniplaces(root, classes=2, per_class=100, val=1, test=0, size=16)
    write_corrupt(root / "images" / made["train"][7])
    cfg = cfg_for(compose, root, f"data.packed_dir={tmp_path / 'p8'}")
    manifest = pack(cfg, size=8, splits=["train", "val"])
    assert manifest["splits"]["train"]["skipped"] == 1 and manifest["splits"]["train"]["count"] == 199
    assert made["train"][7] in manifest["splits"]["train"]["skipped_paths"][0]
    dm = create_data(cfg_for(compose, root, f"data.packed_dir={tmp_path / 'p8'}", "data.format=packed"))
    assert dm.loader("train").split.images.shape == (199, 8, 8, 3)
    assert made["train"][7] not in dm.ids("train")
    assert dm.info["skipped_files"] == 1 and dm.info["packed_size"] == 8
    x, _ = next(iter(dm.loader("val")))
    assert x.shape == (2, 3, 16, 16)  # resized back up to data.img_size on the fly


def test_missing_pack_is_a_clear_error(compose, tmp_path):
    make_miniplaces(tmp_path, classes=2, per_class=1, val=1, test=0)
    with pytest.raises(UserError, match="run `vitcli prepare data=miniplaces"):
        create_data(cfg_for(compose, tmp_path, "data.format=packed"))


def test_prepare_then_train_packed_through_the_cli(cli, read_summary, train_tiny, tmp_path):
    root = tmp_path / "kit"
    make_miniplaces(root, classes=3, per_class=4, val=2, test=2, size=16)
    proc = cli("prepare", "data=miniplaces", f"data.root={root}", "prepare.workers=2", cwd=tmp_path)
    assert "packed miniplaces at 16px" in proc.stderr + proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kit"]  # no outputs/ or .hydra side effects
    run = tmp_path / "run"
    train_tiny(run, "data=miniplaces", f"data.root={root}", "data.img_size=16", "data.format=packed",
              "data.batch_size=8", "trainer.epochs=1", "augmentation=basic")
    summary = read_summary(run)
    assert summary["status"] == "completed" and summary["data_format"] == "packed"
    assert summary["train_samples"] == 12 and summary["skipped_files"] == 0 and summary["num_classes"] == 3
    bad = cli("prepare", "data=digits", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "prepare packs" in bad.stderr
