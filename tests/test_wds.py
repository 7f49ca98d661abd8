"""data=wds: WebDataset shards (written with webdataset's own ShardWriter) read at random through
the shard index (wids' descriptor format), the cached index, `vitcli prepare format=wds`, streaming, and the rules on `pipe:`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from data_builders import digits_images, split_indices, write_folder, write_shards

NO_AUG = ["augmentation=none", "data.img_size=16", "data.num_workers=0"]


@pytest.fixture(scope="module")
def digits_sets(tmp_path_factory):
    """30 digits per class (16 px) as an image folder and as shards (64 samples per shard)."""
    root = tmp_path_factory.mktemp("digits_sets")
    images, labels, names = digits_images(16, per_class=30)
    splits = split_indices(labels)
    return {"folder": write_folder(root / "folder", images, labels, names, splits),
            "wds": write_shards(root / "wds", images, labels, names, splits, per_shard=64),
            "labels": labels, "splits": splits}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VITCLI_CACHE", str(tmp_path / "cache"))


def samples_by_id(data, split: str) -> dict[str, tuple[int, torch.Tensor]]:
    loader = data.loader(split)
    ids = data.ids(split)
    out, seen = {}, 0
    for x, y in loader:
        for j in range(len(y)):
            out[ids[seen + j]] = (int(y[j]), x[j])
        seen += len(y)
    return out


def test_shards_give_the_folder_samples_ids_and_labels(compose, digits_sets):
    from vitcli.data import create_data

    wds = create_data(compose("train", ["data=wds", f"data.root={digits_sets['wds']}",
                                        "data.train='train-{000000..000003}.tar'", "data.val=[val-000000.tar]", *NO_AUG]),
                      train=False)
    folder = create_data(compose("train", ["data=imagefolder", f"data.root={digits_sets['folder']}", "data.format=files",
                                           *NO_AUG]),
                         train=False)
    assert wds.class_names == folder.class_names == [str(c) for c in range(10)]  # classes.txt beside the shards
    assert len(wds.loader("train").split) == 240 and wds.class_counts.tolist() == folder.class_counts.tolist()
    a, b = samples_by_id(wds, "val"), samples_by_id(folder, "val")
    assert a.keys() == b.keys() and len(a) == 60  # ids: the member names == the folder's relative paths
    for key in a:
        assert a[key][0] == b[key][0] and torch.equal(a[key][1], b[key][1]), key


def test_index_cached_and_rebuilt_when_a_shard_changes(compose, digits_sets, tmp_path):
    from vitcli.data.sources import shard_index as S
    from vitcli.data.sources.wds import load_wds

    root = Path(shutil.copytree(digits_sets["wds"], tmp_path / "wds"))
    cfg = compose("train", ["data=wds", f"data.root={root}", "data.train='train-{000000..000003}.tar'",
                            "data.val=val-000000.tar"]).data
    calls = []
    original = S.shard_samples
    S.shard_samples = lambda *a, **k: calls.append(a[0]) or original(*a, **k)
    try:
        load_wds(cfg)
        assert len(calls) == 5
        load_wds(cfg)
        assert len(calls) == 5  # second run: nothing read from the shards
        os.utime(root / "val-000000.tar", ns=(1, 1))  # a different mtime: that split is indexed again
        load_wds(cfg)
        assert calls[5:] == [str(root / "val-000000.tar")]
    finally:
        S.shard_samples = original


def test_wids_reads_the_index_prepare_writes(cli, digits_sets, tmp_path):
    import wids

    out = tmp_path / "out"
    cli("prepare", "format=wds", f"out={out}", "data=imagefolder", f"data.root={digits_sets['folder']}",
        "prepare.shard_size=50")
    desc = json.loads((out / "train.json").read_text())
    assert desc["wids_version"] == 1 and [s["nsamples"] for s in desc["shardlist"]] == [50, 50, 50, 50, 40]
    assert (out / "classes.txt").read_text().split() == [str(c) for c in range(10)]
    # wids' own reader (its cache_dir copy of local shards kept out of /tmp)
    ds = wids.ShardListDataset(str(out / "train.json"), transformations=[], cache_dir=str(tmp_path / "wids"))
    files = sorted((digits_sets["folder"] / "train").glob("*/*.png"), key=lambda p: (p.parent.name, p.name))
    sample = ds[53]
    assert sample["__key__"] == f"train/{files[53].parent.name}/{files[53].stem}"
    assert sample[".cls"].read() == files[53].parent.name.encode()
    assert sample[".png"].read() == files[53].read_bytes()  # PNG bytes copied, not re-encoded


def test_prepare_resumes_at_the_first_missing_shard(compose, digits_sets, tmp_path):
    from vitcli.data.prepare import prepare_shards

    out = tmp_path / "out"
    cfg = compose("prepare", ["format=wds", f"out={out}", "data=imagefolder", f"data.root={digits_sets['folder']}"])
    prepare_shards(cfg.data, out, 100, ["train"], overwrite=False)
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("train-*.tar")}
    (out / "train-000002.tar").unlink()  # a prepare killed while writing the last shard
    (out / "train.json").unlink()
    done = prepare_shards(cfg.data, out, 100, ["train"], overwrite=False)
    again = {p.name: p.stat().st_mtime_ns for p in out.glob("train-*.tar")}
    assert again.keys() == first.keys() and done["train"]["count"] == 240
    assert [n for n in first if first[n] != again[n]] == ["train-000002.tar"]  # only the missing one rewritten
    assert prepare_shards(cfg.data, out, 100, ["train"], overwrite=False) == {}  # finished: nothing to do


def test_pipe_urls_only_from_the_users_config(compose, digits_sets, tmp_path):
    from vitcli.core.errors import UserError
    from vitcli.data.sources.wds import load_wds

    root = digits_sets["wds"]
    cfg = compose("train", ["data=wds", f"data.root={root}", f"data.train='pipe:cat {root}/train-{{000000..000003}}.tar'",
                            "data.val=val-000000.tar", f"data.cache_dir={tmp_path / 'cache'}"]).data
    splits, _ = load_wds(cfg)  # a command the user wrote runs (its output is cached as a local shard)
    assert len(splits["train"]) == 240 and splits["train"].open(lambda im: im).read(5).size == (16, 16)
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.json"
    evil.write_text(json.dumps({"wids_version": 1, "shardlist": [{"url": f"pipe:touch {marker}", "nsamples": 1}]}))
    with pytest.raises(UserError, match="pipe: url.*never from a file inside a dataset"):
        load_wds(compose("train", ["data=wds", f"data.train={evil}", f"data.val={root}/val-000000.tar"]).data)
    assert not marker.exists()


def test_streaming_reads_each_sample_once_and_counts_steps(compose, digits_sets):
    from vitcli.data import create_data

    cfg = compose("train", ["data=wds", f"data.root={digits_sets['wds']}", "data.streaming=true",
                            "data.train='train-{000000..000003}.tar'", "data.val=val-000000.tar",
                            "data.batch_size=32", *NO_AUG])
    data = create_data(cfg, train=True)
    train, val = data.loader("train"), data.loader("val")
    assert len(train) == 240 // 32 and data.info["data_format"] == "stream"
    train.set_epoch(0)
    assert sum(1 for _ in train) == len(train)  # the stream repeats, so every rank runs len() steps
    labels = torch.cat([y for _, y in val])
    assert len(labels) == 60 and labels.tolist() == digits_sets["labels"][digits_sets["splits"]["val"]].tolist()


def test_missing_extra_is_one_line(compose, monkeypatch, digits_sets):
    import importlib.util

    from vitcli.core.errors import UserError
    from vitcli.data.sources.wds import load_wds

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "webdataset" else real(name, *a))
    with pytest.raises(UserError, match=r"data=wds needs the 'webdataset' package: pip install -e '\.\[data\]'"):
        load_wds(compose("train", ["data=wds", f"data.root={digits_sets['wds']}"]).data)


def test_a_truncated_member_is_skipped_and_counted(compose, digits_sets, tmp_path):
    from vitcli.data import create_data

    root = Path(shutil.copytree(digits_sets["wds"], tmp_path / "wds"))
    shard = root / "val-000000.tar"
    data = shard.read_bytes()
    end = data.rfind(b"\x89PNG")  # the last sample's image member: cut it short, keep the tar framing
    shard.write_bytes(data[:end + 60] + b"\0" * (len(data) - end - 60))
    cfg = compose("train", ["data=wds", f"data.root={root}", "data.train='train-{000000..000003}.tar'",
                            "data.val=val-000000.tar", "data.max_bad_fraction=0.05", *NO_AUG])
    data = create_data(cfg, train=False)
    labels = torch.cat([y for _, y in data.loader("val")])
    assert len(labels) == 59 and data.info["skipped_files_val"] == 1
    skipped = data.ids("val")[-1]  # the shard's last sample (the loader's ids leave it out)
    assert len(data.loader("val").ids) == 59 and skipped not in data.loader("val").ids
