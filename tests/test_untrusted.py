"""Attacks by data (DESIGN.md, "Trust boundary"): everything vitcli reads from a dataset or a run
is data only. Each test plants a file that would do harm if it were trusted, then checks that
nothing happened and that the user got one clear line."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import stat
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from data_builders import digits_images, split_indices, write_shards
from tar_builders import grey, http_server, sample, write_tar

from vitcli.core.errors import UserError

# ======================================================================================
# shards and index files
# ======================================================================================


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VITCLI_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """Digits as shards: train-000000..000002.tar (16 samples each), val-000000.tar (12)."""
    images, labels, names = digits_images(16, per_class=6)
    return write_shards(tmp_path_factory.mktemp("shards") / "wds", images, labels, names, split_indices(labels),
                        per_shard=16)


@pytest.fixture
def trap(tmp_path, monkeypatch) -> Path:
    """curl, wget, gsutil and aws on PATH that only leave a mark: a downloader that shells out shows."""
    marker = tmp_path / "a downloader ran"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("curl", "wget", "gsutil", "aws"):
        script = bin_dir / tool
        script.write_text(f"#!/bin/sh\ntouch '{marker}'\nexit 1\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return marker


def index(path: Path, urls: list[str], nsamples: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"wids_version": 1, "shardlist": [{"url": u, "nsamples": nsamples} for u in urls]}))
    return path


def one_line(proc, expected: str) -> str:
    """The run failed with one `vitcli: error:` line holding `expected`, and no traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("vitcli: error:") and expected in lines[0], proc.stderr
    return lines[0]


def wds_cfg(compose, *overrides: str):
    return compose("train", ["data=wds", "data.img_size=16", "augmentation=none", "data.num_workers=0", *overrides])


@pytest.mark.parametrize("url", ["https://example.invalid/a'; touch {file}; echo '",
                                 "https://example.invalid/a';touch${{IFS}}{file};'",
                                 "http://127.0.0.1:9/$(touch {file})"])
def test_shell_metacharacters_in_an_index_url_run_nothing(cli, tmp_path, trap, url):
    planted = tmp_path / "PWNED"
    root = tmp_path / "dataset"
    for split in ("train", "val"):
        index(root / f"{split}.json", [url.format(file=planted)])
    proc = cli("train", "data=wds", f"data.root={root}", "model=vit_pico", f"hydra.run.dir={tmp_path / 'run'}",
               check=False)
    assert url.format(file=planted).split("/")[2] in one_line(proc, "cannot fetch shard ")
    assert not planted.exists() and not trap.exists()


@pytest.mark.parametrize("streaming", [False, True])
def test_a_file_named_pipe_matched_by_a_glob_is_a_file(compose, shards, tmp_path, monkeypatch, streaming):
    from vitcli.data import create_data

    folder = tmp_path / "dataset"
    folder.mkdir()
    shutil.copy(shards / "train-000000.tar", folder / "pipe:touch X")  # a real shard, under a command's name
    shutil.copy(shards / "val-000000.tar", folder / "pipe:touch Y;.tar")
    monkeypatch.chdir(folder)  # a relative glob, no data.root: the match is `pipe:touch X` itself
    data = create_data(wds_cfg(compose, "data.train=*X", "data.val=*.tar", "data.num_classes=10",
                               f"data.streaming={streaming}"), train=False)
    assert sum(len(y) for _, y in data.loader("val")) == 12 and len(data.loader("train")) > 0
    assert sorted(p.name for p in folder.iterdir()) == ["pipe:touch X", "pipe:touch Y;.tar"]  # nothing ran


@pytest.mark.parametrize("where", ["../outside/train-000000.tar", "{outside}/train-000000.tar",
                                   "file://{outside}/train-000000.tar", "sub/../../outside/train-000000.tar"])
def test_an_index_naming_shards_outside_its_folder_is_refused(cli, shards, tmp_path, where):
    outside = Path(shutil.copytree(shards, tmp_path / "outside"))
    root = tmp_path / "dataset"
    index(root / "train.json", [where.format(outside=outside)])
    index(root / "val.json", [str(root / "val-000000.tar")], nsamples=12)
    shutil.copy(shards / "val-000000.tar", root)
    proc = cli("train", "data=wds", f"data.root={root}", "model=vit_pico", f"hydra.run.dir={tmp_path / 'run'}",
               check=False)
    line = one_line(proc, "train.json lists shard")
    assert "outside" in line and "may only name shards under its own folder or data.root" in line


@pytest.mark.parametrize("url", ["ftp://example.invalid/x.tar", "simplecache::https://example.invalid/x.tar",
                                 "data:application/x-tar;base64,AAAA", "ssh://host/x.tar"])
def test_an_index_url_of_another_scheme_is_refused(compose, tmp_path, trap, url):
    from vitcli.data.sources.wds import load_wds

    root = tmp_path / "dataset"
    index(root / "train.json", [url])
    with pytest.raises(UserError, match="is not a local path or a http/https"):
        load_wds(wds_cfg(compose, f"data.root={root}").data)
    assert not trap.exists()


@pytest.mark.parametrize("key", ["../escape", "/tmp/escape", "a/../../escape", "line\nbreak", "bad\udcffbyte"])
def test_member_names_that_are_not_plain_relative_names_are_refused(compose, shards, tmp_path, key):
    from vitcli.data.sources.wds import load_wds

    root = tmp_path / "dataset"
    write_tar(root / "train-000000.tar", [sample("ok/a", 10, 0), sample(key, 20, 1)], "tarfile_gnu")
    shutil.copy(shards / "val-000000.tar", root)
    with pytest.raises(UserError, match=r"train-000000.tar: member name .* (is absolute|is not UTF-8)"):
        load_wds(wds_cfg(compose, f"data.root={root}").data)
    assert not (tmp_path / "escape.png").exists() and not Path("/tmp/escape.png").exists()


class Planted:
    """Unpickling this creates the file `path` (what a hostile .pkl / .pth member would do)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_pickle_members_are_never_unpickled(cli, compose, tmp_path):
    from vitcli.data import create_data

    planted = tmp_path / "unpickled"
    payload = pickle.dumps(Planted(planted))
    root = tmp_path / "dataset"
    for split, n in (("train", 12), ("val", 6)):
        samples = [sample(f"{split}/{i:03d}", 10 * i, i % 3) for i in range(n)]
        for _, members in samples:
            members.update({"pkl": payload, "pickle": payload, "pth": payload, "pyd": payload})
        write_tar(root / f"{split}-000000.tar", samples, "tarwriter")
    for streaming in (False, True):
        data = create_data(wds_cfg(compose, f"data.root={root}", f"data.streaming={streaming}", "data.batch_size=4",
                                   "data.num_classes=3"),
                           train=False)
        assert sum(len(y) for _, y in data.loader("val")) == 6
    cli("prepare", "format=wds", f"out={tmp_path / 'copy'}", "data=wds", f"data.root={root}")
    assert not planted.exists()
    pickle.loads(payload)  # the payload is live: unpickled, it leaves its file
    assert planted.exists()


def test_remote_shards_are_fetched_without_a_shell(compose, shards, tmp_path, trap):
    from vitcli.data import create_data
    from vitcli.data.sources.wds import load_wds

    local, _ = load_wds(wds_cfg(compose, f"data.root={shards}").data)
    root = tmp_path / "dataset"
    with http_server(shards) as base:
        index(root / "train.json", [f"{base}/train-{j:06d}.tar" for j in range(3)])
        index(root / "val.json", [f"{base}/val-000000.tar"], nsamples=12)
        remote, _ = load_wds(wds_cfg(compose, f"data.root={root}", "data.num_classes=10").data)
        stream = create_data(wds_cfg(compose, f"data.root={root}", "data.num_classes=10", "data.streaming=true"),
                             train=False)
        streamed = [int(y) for _, yb in stream.loader("val") for y in yb]
    assert not trap.exists()  # no curl / gsutil / aws was run
    for split in ("train", "val"):
        assert list(remote[split].ids) == list(local[split].ids)
        assert remote[split].labels.tolist() == local[split].labels.tolist()
        a, b = remote[split].open(None), local[split].open(None)
        assert [grey(a.raw(i)) for i in range(len(a))] == [grey(b.raw(i)) for i in range(len(b))]
    assert streamed == local["val"].labels.tolist()
    assert len(list((tmp_path / "cache" / "wds").glob("*.tar"))) == 4  # copied once into the cache dir


def test_an_index_naming_a_fifo_is_refused_not_waited_on(compose, shards, tmp_path):
    from vitcli.data.sources.wds import load_wds

    root = tmp_path / "dataset"
    root.mkdir()
    os.mkfifo(root / "train-000000.tar")  # opening it would wait for a writer that never comes
    index(root / "train.json", ["train-000000.tar"])
    with pytest.raises(UserError, match=r"train-000000.tar is not a regular file"):
        load_wds(wds_cfg(compose, f"data.root={root}").data)


# ======================================================================================
# checkpoints, predictions and class names
# ======================================================================================

def _files(root: Path) -> set[Path]:
    return {p for p in Path(root).rglob("*") if p.is_file()}


def _one_line(proc) -> str:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_a_pickle_in_a_checkpoint_is_refused_not_run(tiny_run_copy, cli, tmp_path):
    run, marker = tiny_run_copy, tmp_path / "planted"
    for which in ("best", "last"):
        torch.save({"model": {}, "payload": Planted(marker)}, run / "checkpoints" / f"{which}.pt")
    for args in (("eval", f"run={run}"), ("predict", f"run={run}"), ("export", f"run={run}"),
                 ("predict", f"run={run}", f"images={run / 'plots'}"), ("train", f"resume={run}", "trainer.epochs=3")):
        line = _one_line(cli(*args, check=False))
        assert "refusing to load" in line and "pickled Python objects" in line, args
        assert not marker.exists(), args


HOSTILE = ["../../escape", "/tmp/vitcli-abs-" + uuid.uuid4().hex, "new\nline", "a/b", "..", "/", "c:\\x", "ok",
           "tab\there", "x" * 300]


def _check_nothing_outside(run: Path, before: set[Path], root: Path, cwd_before: set[str]) -> None:
    new = _files(root) - before
    assert new and all(run in p.parents for p in new), sorted(map(str, new - {p for p in new if run in p.parents}))
    assert set(os.listdir(".")) == cwd_before
    assert not Path(HOSTILE[1]).exists()


def test_hostile_class_names_in_a_checkpoint_stay_data(tiny_run_copy, cli, tmp_path):
    run = tiny_run_copy
    path = run / "checkpoints" / "best.pt"
    state = torch.load(path, weights_only=True)
    state["class_names"] = list(HOSTILE)
    torch.save(state, path)
    line = _one_line(cli("eval", f"run={run}", check=False))  # strict: the names differ from the data's
    assert "class 0 is '../../escape' in the checkpoint but 'class_0' in data=synthetic" in line
    assert "'new\\nline'" in line  # quoted: the message stays one line

    before, cwd_before = _files(tmp_path), set(os.listdir("."))
    cli("eval", f"run={run}", "data_check=warn")
    cli("predict", f"run={run}", "split=val", "submission=always", "data_check=warn")
    cli("predict", f"run={run}", f"images={run / 'plots'}", "name=plots")
    cli("export", f"run={run}", "data_check=warn")
    _check_nothing_outside(run, before, tmp_path, cwd_before)
    import csv

    with open(run / "eval" / "val_best_per_class.csv", newline="") as f:
        assert [row["name"] for row in csv.DictReader(f)] == HOSTILE  # cells, read back intact
    assert json.loads((run / "export" / "best_timm" / "config.json").read_text())["label_names"] == HOSTILE
    assert (run / "submission" / "val_top5.txt").is_file()


@pytest.fixture(scope="module")
def hostile_hf_run(tmp_path_factory, cli):
    """One epoch on a Hugging Face dataset whose ClassLabel names are paths, '..' and newlines."""
    from data_builders import digits_images, split_indices, write_hf

    root = tmp_path_factory.mktemp("hostile_hf")
    images, labels, _ = digits_images(16, per_class=4)
    data = write_hf(root / "ds", images, labels, HOSTILE, split_indices(labels))
    cli("train", "model=vit_pico", "model.patch_size=4", "data=hf", f"data.dataset={data}", "data.img_size=16",
        "data.batch_size=16", "data.num_workers=0", f"data.cache_dir={root / 'cache'}", "augmentation=none",
        "trainer.epochs=1", "trainer.progress=none", f"hydra.run.dir={root / 'run'}")
    return root / "run"


def test_hostile_class_names_in_a_dataset_stay_data(hostile_hf_run, cli, tmp_path):
    import shutil

    run = Path(shutil.copytree(hostile_hf_run, tmp_path / "run"))
    assert torch.load(run / "checkpoints" / "best.pt", weights_only=True)["class_names"] == HOSTILE
    before, cwd_before = _files(tmp_path), set(os.listdir("."))
    cli("eval", f"run={run}")
    cli("predict", f"run={run}", "split=val", "submission=always")
    cli("export", f"run={run}")
    _check_nothing_outside(run, before, tmp_path, cwd_before)
    assert json.loads((run / "export" / "best_timm" / "config.json").read_text())["label_names"] == HOSTILE


def test_a_prediction_file_with_object_arrays_is_refused(fake_run, cli, tmp_path):
    from vitcli.core.predictions import Predictions

    marker = tmp_path / "planted"
    rng = np.random.default_rng(0)
    good = Predictions(rng.normal(size=(8, 3)), [f"val/{i}" for i in range(8)], ["a", "b", "c"], np.arange(8) % 3)
    a = fake_run(tmp_path / "a", predictions={"val": good})
    b = fake_run(tmp_path / "b", dirs=("predictions",))
    hostile = np.empty(8, dtype=object)
    hostile[0] = Planted(marker)
    np.savez(b / "predictions" / "val.npz", logits=hostile, ids=np.asarray(good.ids),
             class_names=np.asarray(["a", "b", "c"]), source=np.asarray("{}"))
    line = _one_line(cli("ensemble", f"runs=[{a},{b}]", "split=val", "predict_missing=false",
                         f"out={tmp_path / 'out'}", check=False))
    assert f"{b}/predictions/val.npz is not a vitcli predictions file" in line and "allow_pickle" in line
    assert not marker.exists() and not (tmp_path / "out").exists()
