"""Labels and data identity: every checkpoint records the class names and, per split, the sample
count and hashes of its ids (as a set, with labels, in order); resume, eval, predict and export
compare them with the data they are given and stop with one line on a mismatch, unless
data_check=warn. Data changed on disk is the point: an image folder gains files or a class
folder is renamed, a shard glob picks up a new shard."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from data_builders import digits_images, split_indices, write_folder, write_shards
from tar_builders import sample, write_tar

FOLDER = ["model=vit_pico", "model.patch_size=4", "data=imagefolder", "data.img_size=16", "data.batch_size=16",
          "data.num_workers=0", "augmentation=none", "trainer.epochs=1", "trainer.progress=none"]


@pytest.fixture(scope="module")
def digits_set():
    images, labels, _ = digits_images(16, per_class=6)
    return images, labels, [f"digit_{c}" for c in range(10)], split_indices(labels)


@pytest.fixture(scope="module")
def folder_run(digits_set, tmp_path_factory, cli):
    """A one-epoch run on a 60-image folder (48 train / 12 val): (run dir, data root); copy both to change them."""
    base = tmp_path_factory.mktemp("folder_run")
    root = write_folder(base / "data", *digits_set)
    cli("train", *FOLDER, f"data.root={root}", f"hydra.run.dir={base / 'run'}")
    return base / "run", root


@pytest.fixture()
def folder_copy(folder_run, tmp_path):
    """A writable copy of the run and of its data; the copied config.yaml points at the copied data."""
    run, root = folder_run
    data = Path(shutil.copytree(root, tmp_path / "data"))
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    config = copy / "config.yaml"
    config.write_text(config.read_text().replace(str(root), str(data)))
    return copy, data


def _one_line_error(proc) -> str:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def _add_train_images(data: Path, digits_set, n: int) -> None:
    images, labels, names, _ = digits_set
    for i in range(n):
        images[i].save(data / "train" / names[labels[i]] / f"extra_{i}.png")


def test_a_checkpoint_records_class_names_and_every_split(tiny_run, compose):
    from vitcli.data import create_data
    from vitcli.data.module import data_identity
    from vitcli.core.runs import load_run_config

    state = torch.load(tiny_run / "checkpoints" / "best.pt", weights_only=True)
    identity = state["data_identity"]
    data = create_data(load_run_config(tiny_run), train=False)
    assert identity == data_identity(data)  # the run's own data, read again, matches what it recorded
    assert identity["class_names"] == state["class_names"] == [f"class_{c}" for c in range(10)]
    assert {k: v["count"] for k, v in identity["splits"].items()} == {"train": 128, "val": 32}
    other = data_identity(create_data(compose("train", ["data=synthetic", "data.num_samples=160", "data.split_seed=1",
                                                        "data.img_size=16", "data.native_size=16"]), train=False))
    train, other_train = identity["splits"]["train"], other["splits"]["train"]
    assert other_train["count"] == 128 and other_train["ids"] != train["ids"]  # another split seed: other samples


def test_ids_hash_ignores_order_which_has_its_own_hash():
    from vitcli.data.arrays import ArraySplit
    from vitcli.data.module import split_difference, split_identity

    ids, labels = [f"s/{i}" for i in range(20)], np.arange(20) % 4
    a = split_identity(ArraySplit(np.zeros((20, 2, 2, 3), np.uint8), labels, ids))
    b = split_identity(ArraySplit(np.zeros((20, 2, 2, 3), np.uint8), labels[::-1].copy(), ids[::-1]))
    assert a["ids"] == b["ids"] and a["labels"] == b["labels"] and a["order"] != b["order"]
    assert split_difference("train", a, b, order=False) is None  # eval, predict: the same samples and labels
    assert "another order" in split_difference("train", a, b, order=True)  # resume: other batches
    relabelled = split_identity(ArraySplit(np.zeros((20, 2, 2, 3), np.uint8), (labels + 1) % 4, ids))
    assert split_difference("val", a, relabelled, order=False) == "val samples carry other labels"


def test_resume_stops_when_files_were_added_and_warn_accepts_them(folder_copy, digits_set, cli):
    run, data = folder_copy
    _add_train_images(data, digits_set, 3)
    before = {p: (run / p).read_bytes() for p in ("config.yaml", "checkpoints/last.pt", "summary.json")}
    out = cli("train", f"resume={run}", "trainer.epochs=2", check=False)
    line = _one_line_error(out)
    assert f"{run}/checkpoints/last.pt was trained on other data than data.root={data} holds now" in line
    assert "3 train samples added (48 in the checkpoint, 51 now)" in line and "data_check=warn" in line
    assert {p: (run / p).read_bytes() for p in before} == before  # nothing already written is lost

    out = cli("train", f"resume={run}", "trainer.epochs=2", "data_check=warn")
    assert "3 train samples added" in out.stdout and "data_check=warn: going on" in out.stdout
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["data_identity"]["splits"]["train"]["count"] == 51  # the new data, recorded
    cli("train", f"resume={run}", "trainer.epochs=3")  # accepted once: the next resume compares with the new record


def test_resume_stops_when_a_class_folder_is_renamed(folder_copy, cli):
    run, data = folder_copy
    for split in ("train", "val"):
        (data / split / "digit_3").rename(data / split / "zebra")  # sorted: digit_4 becomes class 3
    line = _one_line_error(cli("train", f"resume={run}", "trainer.epochs=2", check=False))
    assert f"class 3 is 'digit_3' in the checkpoint but 'digit_4' in data.root={data}" in line
    assert "(7 classes differ); 'digit_3' gone, 'zebra' new" in line


def test_eval_predict_and_export_compare_the_split_they_read(folder_copy, digits_set, cli):
    run, data = folder_copy
    images, labels, names, _ = digits_set
    images[0].save(data / "val" / names[labels[0]] / "extra.png")
    for command in ("eval", "predict", "export"):
        line = _one_line_error(cli(command, f"run={run}", "device=cpu", check=False))
        assert f"{run}/checkpoints/best.pt was trained on other data than data.root={data} holds now: 1 val samples " \
               "added (12 in the checkpoint, 13 now); restore the data the run was trained on" in line, command
    assert not (run / "eval").exists() and not (run / "predictions").exists() and not (run / "export").exists()
    out = cli("eval", f"run={run}", "device=cpu", "data_check=warn", "save=false")
    assert "1 val samples added" in out.stdout and "(13 samples)" in out.stdout
    (data / "val" / names[labels[0]] / "extra.png").unlink()
    _add_train_images(data, digits_set, 2)  # eval reads val only: more training images do not change its numbers
    cli("eval", f"run={run}", "device=cpu", "save=false")


def test_export_names_come_from_the_checkpoint_and_are_checked(folder_copy, cli):
    import json

    run, data = folder_copy
    for split in ("train", "val"):
        (data / split / "digit_3").rename(data / split / "zebra")
    line = _one_line_error(cli("export", f"run={run}", check=False))
    assert "class 3 is 'digit_3' in the checkpoint but 'digit_4'" in line
    cli("export", f"run={run}", "data_check=warn")
    config = json.loads((run / "export" / "best_timm" / "config.json").read_text())
    assert config["label_names"] == [f"digit_{c}" for c in range(10)]  # what the model learned, not the new folders
    shutil.rmtree(data)
    out = cli("export", f"run={run}", "out=" + str(run / "again"))  # data gone: the recorded names, said so
    assert "unchecked: the run's data cannot be read" in out.stdout


def test_a_checkpoint_without_identity_still_loads_with_a_warning(tiny_run_copy, cli):
    path = tiny_run_copy / "checkpoints" / "best.pt"
    state = torch.load(path, weights_only=True)
    del state["data_identity"]
    torch.save(state, path)
    out = cli("eval", f"run={tiny_run_copy}", "device=cpu", "save=false")
    assert "records no data identity (written by an older vitcli)" in out.stdout and "top1" in out.stdout
    state["class_names"] = ["cat"] + state["class_names"][1:]  # the names it does record are still compared
    torch.save(state, path)
    line = _one_line_error(cli("eval", f"run={tiny_run_copy}", "device=cpu", check=False))
    assert "class 0 is 'cat' in the checkpoint but 'class_0' in data=synthetic" in line


def test_resume_stops_when_a_shard_glob_picks_up_a_new_shard(digits_set, cli, tmp_path):
    images, labels, names, splits = digits_set
    root = write_shards(tmp_path / "shards", images, labels, names, splits, per_shard=100)
    run = tmp_path / "run"
    cli("train", *[o for o in FOLDER if not o.startswith("data=")], "data=wds", f"data.root={root}",
        "data.train=train-*.tar", "data.val=val-*.tar", f"data.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run}")
    # 4 more samples (new keys) in a shard the glob now matches, written by webdataset's TarWriter
    write_tar(root / "train-000001.tar", [sample(f"train/extra/{i:05d}", 40 * i, int(labels[i])) for i in range(4)],
              "tarwriter")
    line = _one_line_error(cli("train", f"resume={run}", "trainer.epochs=2", check=False))
    assert "train holds other samples" in line or "4 train samples added" in line
