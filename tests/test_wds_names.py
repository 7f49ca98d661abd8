"""Shards lose no sample, whoever wrote them: webdataset's TarWriter (ustar and PAX headers) and
Python's tarfile (GNU and PAX), with member names over 100 bytes, upper-case extensions and
non-ASCII names, read by the indexed and the streaming reader; same-key members refused; and
`vitcli prepare format=wds` checks what it wrote and where it writes."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from tar_builders import WRITERS, grey, http_server, sample, solid, write_tar

from vitcli.core.errors import UserError

LONG = "imagenet/train/n01440764/" + "0f3c9a2e-5b1d-4c6e-9a7f-" * 3  # a path over 100 bytes (ustar: a prefix)
# (key, image extension, label extension); keys 2 and 3 differ only in a non-ASCII letter
NAMES = [(LONG + "a", "JPEG", "cls"), (LONG + "b", "jpg", "CLS"), ("train/café/ünï_é", "PNG", "cls"),
         ("train/café/ünï_è", "png", "cls"), ("train/日本/写真", "Jpeg", "cls"), ("train/UPPER/IMG_0001", "WEBP", "cls"),
         ("train/" + "é" * 60 + "/" + "ü" * 30, "png", "cls")]
LONG_BASE = ("train/n01443537/" + "7" * 110, "JPEG", "cls")  # a base name over 100 bytes: not in ustar


def names_for(writer: str) -> list[tuple[str, str, str]]:
    return NAMES if writer == "tarfile_ustar" else [*NAMES, LONG_BASE]


def expected_samples(split: str, names: list[tuple[str, str, str]]) -> list[tuple[str, str, int, int]]:
    """(key, image ext, label, grey level) of each sample of a split: every one distinct."""
    out = []
    for i, (key, ext, _) in enumerate(names):
        j = i + (len(names) if split == "val" else 0)
        out.append((key.replace("train/", f"{split}/"), ext, j % 5 if split == "train" else (len(names) - 1 - i),
                    10 + 15 * j))
    return out


def write_split(root: Path, split: str, writer: str, per_shard: int) -> dict[str, tuple[int, int]]:
    """The split's shards; returns {id: (label, grey)} as the reader must give them back."""
    names = names_for(writer)
    rows = expected_samples(split, names)
    samples = [sample(key, value, label, ext, label_ext)
               for (key, ext, label, value), (_, _, label_ext) in zip(rows, names)]
    for j in range(0, len(samples), per_shard):
        write_tar(root / f"{split}-{j // per_shard:06d}.tar", samples[j:j + per_shard], writer)
    return {f"{key}.{ext}": (label, value) for key, ext, label, value in rows}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VITCLI_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("writer", WRITERS)
def test_every_sample_arrives_with_its_label_whoever_wrote_the_tar(compose, tmp_path, writer):
    from vitcli.data import create_data
    from vitcli.data.sources.wds import load_wds

    root = tmp_path / "wds"
    want = {"train": write_split(root, "train", writer, per_shard=4), "val": write_split(root, "val", writer, 7)}
    overrides = ["data=wds", f"data.root={root}", "data.num_classes=8", "data.img_size=8", "augmentation=none",
                 "data.num_workers=0"]
    splits, _ = load_wds(compose("train", overrides).data)
    for name, split in splits.items():
        data = split.open(lambda img: img)
        got = {split.ids[i]: (int(split.labels[i]), grey(data.raw(i))) for i in range(len(split))}
        assert len(split) == len(got) == len(want[name])  # no sample lost, none merged
        assert got.keys() == want[name].keys()  # ids: the member names, UTF-8 and case kept
        for key, (label, value) in want[name].items():
            assert got[key][0] == label and abs(got[key][1] - value) <= 2, key
    # the streaming reader: the same samples, in tar order
    stream = create_data(compose("train", [*overrides, "data.streaming=true", "data.batch_size=4"]), train=False)
    labels = [int(y) for _, yb in stream.loader("val") for y in yb]
    assert labels == [label for label, _ in want["val"].values()]


def test_a_sample_with_two_images_is_refused_naming_both(tmp_path):
    from vitcli.data.sources.tar_members import shard_samples

    shard = write_tar(tmp_path / "s.tar", [("a", {"jpg": solid(1, "jpg"), "png": solid(2, "png"), "cls": b"0"})],
                      "tarfile_pax")
    with pytest.raises(UserError, match=r"sample 'a' has two images \('a.jpg' and 'a.png'\).*data.image_key=jpg"):
        shard_samples(str(shard), ("jpg", "jpeg", "png", "webp"), "cls", True)
    assert len(shard_samples(str(shard), ("png",), "cls", True).ids) == 1  # the user's choice reads


def write_stream_set(root: Path, bad: tuple[str, dict[str, bytes]], base: str) -> None:
    """A train shard with `bad` between good samples, a val shard, and wids descriptors naming them by
    `base` (a url: the streaming reader cannot read remote headers ahead, so it meets `bad` mid-stream)."""
    write_tar(root / "train-000000.tar", [sample("k/0", 10, 0), bad, sample("k/2", 30, 1)], "tarfile_pax")
    write_tar(root / "val-000000.tar", [sample("v/0", 10, 0), sample("v/1", 30, 1)], "tarfile_pax")
    for split, n in (("train", 3), ("val", 2)):
        (root / f"{split}.json").write_text(json.dumps({"wids_version": 1, "shardlist": [
            {"url": f"{base}/{split}-000000.tar", "nsamples": n}]}))


@pytest.mark.parametrize("bad, refusal, workers", [
    (("k/1", {"jpg": solid(1, "jpg"), "png": solid(2, "png"), "cls": b"0"}),
     "sample 'k/1' has two images ('k/1.jpg' and 'k/1.png'); keep one, or choose with data.image_key=jpg", 0),
    (("k/1", {"jpg": solid(1, "jpg"), "png": solid(2, "png"), "cls": b"0"}),
     "sample 'k/1' has two images ('k/1.jpg' and 'k/1.png'); keep one, or choose with data.image_key=jpg", 1),
    (("k/1", {"png": solid(1, "png"), "cls": b"0", "PNG": solid(2, "png")}),
     "sample 'k/1' has two 'png' members ('k/1.png' and 'k/1.PNG'); keys must be unique", 1),
])
def test_the_streaming_reader_refuses_what_the_indexed_reader_refuses(cli, tmp_path, bad, refusal, workers):
    """Remote shards streamed: a sample with two images was read with the first image key that matched, and
    one with two members of one extension ended in webdataset's traceback; from a loader worker, a refusal
    came wrapped in the worker's traceback. Now one line, the indexed reader's, exit 2."""
    root = tmp_path / "wds"
    with http_server(root) as base:
        write_stream_set(root, bad, base)
        args = ["train", "data=wds", f"data.train={root}/train.json", f"data.val={root}/val.json", "data.streaming=true",
                "data.num_classes=2", "data.img_size=8", "data.batch_size=2", f"data.num_workers={workers}",
                "augmentation=none", "model=vit_pico", "trainer.epochs=1", "trainer.progress=none",
                f"hydra.run.dir={tmp_path / 'run'}"]
        proc = cli(*args, check=False)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines() == [f"vitcli: error: shard train-000000.tar: {refusal}"
                                                    + ("" if "two images" in refusal else ", rewrite the shard")]
        if "two images" in refusal:  # the user's choice reads
            cli(*args[:-1], "data.image_key=png", f"hydra.run.dir={tmp_path / 'chosen'}")


def test_a_key_twice_in_a_split_is_refused(compose, tmp_path):
    from vitcli.data.sources.wds import load_wds

    root = tmp_path / "wds"
    write_tar(root / "train-000000.tar", [sample("k/a", 10, 0), sample("k/b", 20, 1)], "tarwriter")
    write_tar(root / "train-000001.tar", [sample("k/c", 30, 0), sample("k/a", 40, 1)], "tarwriter")
    write_tar(root / "val-000000.tar", [sample("v/a", 10, 0)], "tarwriter")
    with pytest.raises(UserError, match=r"'k/a.png' is in train-000000.tar and again in train-000001.tar"):
        load_wds(compose("train", ["data=wds", f"data.root={root}"]).data)


def test_a_corrupt_header_mid_shard_is_refused_not_cut_short(tmp_path):
    from vitcli.data.sources.tar_members import shard_samples

    shard = write_tar(tmp_path / "s.tar", [sample(f"s{i}", 10 * i, i) for i in range(6)], "tarfile_gnu")
    with tarfile.open(shard) as tar:
        third = tar.getmembers()[4].offset  # the third sample's image header
    data = bytearray(shard.read_bytes())
    data[third + 148:third + 156] = b"0000000\0"  # a wrong header checksum: tarfile stops reading there
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"s.tar holds unreadable data after its member 4"):
        shard_samples(str(shard), ("png",), "cls", True)


# ---- vitcli prepare format=wds ----

def write_folder_tree(root: Path) -> dict[str, tuple[str, int]]:
    """An image folder whose file names are long, upper-case or non-ASCII; {id: (class, grey)}."""
    classes = ["café", "日本", "z" * 90]
    want = {}
    for split in ("train", "val"):
        for i, (stem, ext, _) in enumerate(NAMES):
            label = (i + (split == "val")) % 3
            name = f"{stem.rsplit('/', 1)[-1][:80]}_{i}.{ext}"
            path = root / split / classes[label] / name
            path.parent.mkdir(parents=True, exist_ok=True)
            value = 10 + 17 * i + (100 if split == "val" else 0)
            path.write_bytes(solid(value, path.suffix[1:]))
            want[f"{split}/{classes[label]}/{name}"] = (classes[label], value)
    return want


def test_prepare_writes_long_unicode_upper_case_names_that_read_back(cli, compose, tmp_path):
    from vitcli.data.sources.wds import load_wds

    want = write_folder_tree(tmp_path / "folder")
    out = tmp_path / "out"
    cli("prepare", "format=wds", f"out={out}", "data=imagefolder", f"data.root={tmp_path / 'folder'}",
        "prepare.shard_size=3")
    splits, names = load_wds(compose("train", ["data=wds", f"data.root={out}"]).data)
    assert names == sorted(["café", "日本", "z" * 90])
    got = {}
    for split in splits.values():
        data = split.open(lambda img: img)
        for i in range(len(split)):
            got[split.ids[i].rsplit(".", 1)[0]] = (names[split.labels[i]], grey(data.raw(i)))
    assert len(got) == len(want) == sum(len(s) for s in splits.values())  # none lost, none merged
    for sample_id, (name, value) in want.items():
        label, level = got[sample_id.rsplit(".", 1)[0]]  # the key: the id without its extension
        assert label == name and abs(level - value) <= 2, sample_id


def test_prepare_refuses_two_files_that_would_be_one_sample(compose, tmp_path):
    from vitcli.data.prepare import prepare_shards

    for split in ("train", "val"):
        (tmp_path / "folder" / split / "c").mkdir(parents=True)
        (tmp_path / "folder" / split / "c" / "a.jpg").write_bytes(solid(10, "jpg"))
        (tmp_path / "folder" / split / "c" / "a.png").write_bytes(solid(20, "png"))
    cfg = compose("prepare", ["format=wds", "data=imagefolder", f"data.root={tmp_path / 'folder'}"])
    with pytest.raises(UserError, match=r"train/c/a.jpg and train/c/a.png would both be sample 'train/c/a'"):
        prepare_shards(cfg.data, tmp_path / "out", 10, None, overwrite=False, show_progress=False)
    assert not (tmp_path / "out").exists()


def test_prepare_refuses_an_out_holding_other_files(compose, tmp_path):
    from vitcli.data.prepare import prepare_shards

    write_folder_tree(tmp_path / "folder")
    cfg = compose("prepare", ["format=wds", "data=imagefolder", f"data.root={tmp_path / 'folder'}"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"holds notes.txt, which prepare did not write"):
        prepare_shards(cfg.data, out, 3, None, overwrite=True, show_progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    (out / "notes.txt").unlink()
    # shards of another dataset under prepare's own names: not taken for a finished part of this one
    write_tar(out / "train-000000.tar", [sample("train/café/x", 1, 0), sample("train/café/y", 2, 0)], "tarwriter")
    with pytest.raises(UserError, match=r"holds train-000000.tar, which is not this dataset's"):
        prepare_shards(cfg.data, out, 3, None, overwrite=False, show_progress=False)
    assert not (out / "train.json").exists()


def test_prepare_fails_loudly_when_a_shard_reads_back_wrong(compose, tmp_path, monkeypatch):
    import webdataset as wds

    from vitcli.data.prepare import prepare_shards

    write_folder_tree(tmp_path / "folder")
    cfg = compose("prepare", ["format=wds", "data=imagefolder", f"data.root={tmp_path / 'folder'}"])
    real = wds.TarWriter.write
    count = iter(range(10**6))

    def lossy(self, obj):  # a writer that mislabels its fifth sample (what a broken disk or tar writer does)
        return real(self, {**obj, "cls": b"2"} if next(count) == 4 else obj)

    monkeypatch.setattr(wds.TarWriter, "write", lossy)
    with pytest.raises(UserError, match=r"train-000001.tar.tmp reads back wrong \(sample 1 is .* label 2"):
        prepare_shards(cfg.data, tmp_path / "out", 3, None, overwrite=False, show_progress=False)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tar")) == ["train-000000.tar"]  # only the good one kept
    assert not (tmp_path / "out" / "train.json").exists()


def test_a_label_that_is_not_an_integer_is_refused_by_both_readers(compose, tmp_path):
    from vitcli.data import create_data
    from vitcli.data.sources.wds import load_wds

    root = tmp_path / "wds"
    for split in ("train", "val"):
        write_tar(root / f"{split}-000000.tar", [(f"{split}/a", {"png": solid(10, "png"), "json": b'{"label": 1}'}),
                                                 (f"{split}/b", {"png": solid(20, "png"), "json": b'{"label": 2.5}'})],
                  "tarwriter")
        (root / f"{split}.json").write_text(json.dumps({"wids_version": 1, "shardlist": [
            {"url": f"{split}-000000.tar", "nsamples": 2}]}))  # counts given: the stream reads no header first
    overrides = ["data=wds", f"data.root={root}", "data.label_key=json.label", "data.num_classes=3", "data.img_size=8",
                 "augmentation=none", "data.num_workers=0"]
    with pytest.raises(UserError, match=r"sample 'train/b': the json field 'label' is not an integer class index"):
        load_wds(compose("train", overrides).data)  # 2.5 is not class 2
    stream = create_data(compose("train", [*overrides, "data.streaming=true"]), train=False)
    with pytest.raises(UserError, match=r"sample 'val/b': the json field 'label' is not an integer class index"):
        list(stream.loader("val"))
