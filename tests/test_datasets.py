"""MiniPlaces, ImageNet and image-folder datasets on small generated JPEG trees, bad input included."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from jpeg_trees import (
    make_imagefolder,
    make_imagenet,
    make_miniplaces,
    write_cmyk,
    write_corrupt,
    write_grayscale,
    write_png_alpha,
    write_truncated,
)

from vitcli.core.errors import UserError
from vitcli.data import create_data


def data_cfg(compose, root, name="miniplaces", *extra):
    return compose("train", [f"data={name}", f"data.root={root}", "data.img_size=16", "data.num_workers=0",
                             "data.batch_size=8", *extra])


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("mp") / "miniplaces"
    return root, make_miniplaces(root, classes=6, per_class=3, val=2, test=5, size=16)


def test_miniplaces_labels_come_from_the_list_files_with_nested_names(compose, mini):
    root, made = mini
    dm = create_data(data_cfg(compose, root))
    # nested categories keep the path after the letter folder, so colliding leaves stay distinct
    assert dm.class_names == made["class_names"]
    assert {"bakery/shop", "church/outdoor", "market/outdoor", "museum/indoor", "stage/indoor"} <= set(dm.class_names)
    assert dm.num_classes == 6 and len(set(dm.class_names)) == 6
    train = dm.loader("train").split
    assert train.ids == made["train"] and train.ids[3].startswith("train/b/bakery/shop/")
    assert train.labels.tolist() == [i // 3 for i in range(18)]
    assert dm.ids("val") == made["val"]
    labels = torch.cat([y for _, y in dm.loader("val")])
    assert labels.tolist() == made["val_labels"]


def test_miniplaces_test_split_is_enumerated_unlabelled_and_split_prefixed(compose, mini):
    root, made = mini
    dm = create_data(data_cfg(compose, root))
    assert dm.ids("test") == made["test"] == [f"test/{k:08d}.jpg" for k in range(1, 6)]
    assert set(dm.ids("val")) & {f"val/{k:08d}.jpg" for k in range(1, 6)}  # same file names, other split
    x, y = next(iter(dm.loader("test")))
    assert x.shape == (5, 3, 16, 16) and y.tolist() == [-1] * 5
    assert dm.info["test_samples"] == 5 and dm.info["skipped_files"] == 0


@pytest.mark.parametrize("list_dir,crlf", [("data", True), ("", True)])
def test_miniplaces_list_files_under_data_and_crlf(compose, tmp_path, list_dir, crlf):
    made = make_miniplaces(tmp_path, classes=3, per_class=2, val=1, test=0, list_dir=list_dir, crlf=crlf)
    assert b"\r\n" in (tmp_path / list_dir / "train.txt").read_bytes()
    dm = create_data(data_cfg(compose, tmp_path))
    assert dm.class_names == made["class_names"] and dm.ids("train") == made["train"]
    assert "test" not in dm.loaders  # no test images: no test split


def test_miniplaces_resizes_to_img_size(compose, mini):
    root, _ = mini
    x, _ = next(iter(create_data(data_cfg(compose, root, "miniplaces", "data.img_size=24")).loader("val")))
    assert x.shape[-2:] == (24, 24)


@pytest.mark.parametrize("break_it,expect", [
    (None, "does not exist"),  # root itself missing
    (lambda r: (r / "categories.txt").unlink(), "no categories.txt"),
    (lambda r: (r / "val.txt").unlink(), "val.txt is missing"),
    (lambda r: (r / "train.txt").write_text("train/a/abbey/00000001.jpg 0\nthis-line-has-no-label\n"),
     "train.txt:2: malformed line"),
    (lambda r: (r / "val.txt").write_text("val/00000001.jpg 0\nval/00000002.jpg 7\n"), "val.txt:2: label 7 is outside"),
    (lambda r: (r / "train.txt").write_text("train/a/abbey/00000001.jpg 0\n"), "have no images"),
])
def test_miniplaces_bad_layouts_give_one_clear_error(compose, tmp_path, break_it, expect):
    root = tmp_path / "kit"
    if break_it is not None:
        make_miniplaces(root, classes=2, per_class=1, val=1, test=0)
        break_it(root)
    with pytest.raises(UserError, match=expect):
        create_data(data_cfg(compose, root))


def test_bad_layout_through_the_cli_prints_one_line(cli, tmp_path):
    proc = cli("train", "data=miniplaces", f"data.root={tmp_path / 'nowhere'}", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "nowhere" in proc.stderr and "categories.txt" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_imagefolder_sorted_classes_and_class_map(compose, tmp_path):
    make_imagefolder(tmp_path, ("zebra", "ant", "mole"), per_class=2)
    dm = create_data(data_cfg(compose, tmp_path, "imagefolder"))
    assert dm.class_names == ["ant", "mole", "zebra"]
    assert dm.ids("val")[0] == "val/ant/ant_0000.jpg" and "test" not in dm.loaders
    cmap = tmp_path / "classes.txt"
    cmap.write_text("zebra Zebra\r\nmole\nant Ant (small)\n\n")
    dm = create_data(data_cfg(compose, tmp_path, "imagefolder", f"data.class_map={cmap}"))
    assert dm.class_names == ["Zebra", "mole", "Ant (small)"]
    train = dm.loader("train").split
    label_of = dict(zip(train.ids, train.labels.tolist()))
    assert label_of["train/zebra/zebra_0001.jpg"] == 0 and label_of["train/ant/ant_0000.jpg"] == 2


def test_imagefolder_custom_split_names_and_unknown_class(compose, tmp_path):
    make_imagefolder(tmp_path, ("a", "b"), per_class=2, splits=("training", "holdout"))
    dm = create_data(data_cfg(compose, tmp_path, "imagefolder", "data.train_split=training", "data.val_split=holdout"))
    assert dm.info["train_samples"] == 4 and dm.ids("val")[0].startswith("holdout/a/")
    make_imagefolder(tmp_path, ("c",), per_class=1, splits=("holdout",))
    with pytest.raises(UserError, match="is not a class"):
        create_data(data_cfg(compose, tmp_path, "imagefolder", "data.train_split=training", "data.val_split=holdout"))
    with pytest.raises(UserError, match="does not exist"):
        create_data(data_cfg(compose, tmp_path, "imagefolder"))


def test_imagenet_layout_uses_sorted_wnids(compose, tmp_path):
    wnids = ("n01484850", "n01440764", "n01443537")
    make_imagenet(tmp_path, wnids, per_class=2)
    dm = create_data(data_cfg(compose, tmp_path, "imagenet"))
    assert dm.class_names == sorted(wnids)
    assert dm.ids("train")[0] == "train/n01440764/n01440764_0000.JPEG"
    for p in (tmp_path / "val").rglob("*.JPEG"):  # flat val, as before valprep
        p.rename(tmp_path / "val" / p.name)
    for d in (tmp_path / "val").iterdir():
        if d.is_dir():
            d.rmdir()
    with pytest.raises(UserError, match="valprep"):
        create_data(data_cfg(compose, tmp_path, "imagenet"))


def test_odd_colour_modes_are_converted_to_rgb(compose, tmp_path):
    make_imagefolder(tmp_path, ("a", "b"), per_class=3)
    val = sorted((tmp_path / "val").rglob("*.jpg"))
    write_grayscale(val[0]), write_cmyk(val[1]), write_png_alpha(val[2])
    dm = create_data(data_cfg(compose, tmp_path, "imagefolder"))
    x, y = next(iter(dm.loader("val")))
    assert x.shape == (6, 3, 16, 16) and dm.info["skipped_files"] == 0


def test_corrupt_and_truncated_files_are_skipped_counted_and_warned(compose, tmp_path, caplog):
    make_imagefolder(tmp_path, ("a", "b", "c", "d"), per_class=60, splits=("train",), size=8)
    make_imagefolder(tmp_path, ("a", "b", "c", "d"), per_class=1, splits=("val",), size=8)
    files = sorted((tmp_path / "train").rglob("*.jpg"))
    write_corrupt(files[5]), write_truncated(files[100])
    dm = create_data(data_cfg(compose, tmp_path, "imagefolder", "data.batch_size=48"))  # 5 full batches: all read
    loader = dm.loader("train")
    with caplog.at_level(logging.WARNING, logger="vitcli"):
        seen = sum(len(y) for _, y in loader)
    assert seen == 238
    assert dm.info["skipped_files"] == 2 and dm.info["skipped_files_train"] == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 2 unreadable" in warnings[0] and str(files[5]) in warnings[0]
    list(loader)  # a second epoch does not warn again for the same files
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    assert len(loader.ids) == 238


def test_more_than_one_percent_unreadable_aborts(compose, tmp_path):
    make_imagefolder(tmp_path, ("a", "b"), per_class=10, size=8)
    write_corrupt(sorted((tmp_path / "train").rglob("*.jpg"))[3])
    dm = create_data(data_cfg(compose, tmp_path, "imagefolder", "data.batch_size=10"))
    with pytest.raises(UserError, match=r"1 of 20 files in split 'train' could not be decoded"):
        list(dm.loader("train"))


def test_minival_is_a_fixed_stratified_part_of_train(compose, mini):
    root, made = mini
    dm = create_data(data_cfg(compose, root, "miniplaces", "data.minival_fraction=0.33"))
    train, mini_ids = dm.ids("train"), dm.ids("minival")
    assert not set(train) & set(mini_ids) and sorted(train + mini_ids) == sorted(made["train"])
    assert np.bincount(dm.loader("minival").split.labels).tolist() == [1] * 6
    assert dm.info["minival_samples"] == 6 and dm.ids("val") == made["val"]
    assert create_data(data_cfg(compose, root, "miniplaces", "data.minival_fraction=0.33")).ids("minival") == mini_ids


def test_minival_on_in_memory_data(compose):
    dm = create_data(compose("train", ["data.minival_fraction=0.1"]))
    assert dm.info["minival_samples"] + dm.info["train_samples"] + dm.info["val_samples"] == 1797


def test_train_one_epoch_on_miniplaces_files_through_the_cli(read_summary, train_tiny, mini, tmp_path):
    root, _ = mini
    run = tmp_path / "run"
    train_tiny(run, "data=miniplaces", f"data.root={root}", "data.img_size=16", "data.num_workers=0",
              "data.batch_size=8", "trainer.epochs=1", "augmentation=basic",
              "data.format=files")  # 16 px images at img_size 16: auto would hold them in memory
    summary = read_summary(run)
    assert summary["status"] == "completed" and summary["num_classes"] == 6
    assert summary["data_format"] == "files" and summary["skipped_files"] == 0
    assert summary["train_samples"] == 18 and summary["test_samples"] == 5
