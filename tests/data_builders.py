"""One small labelled image set written three ways: an image folder, WebDataset shards (with
webdataset's own ShardWriter) and a Hugging Face dataset (with `datasets`), so tests can check
that the three sources give the same samples and train alike."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def digits_images(size: int = 16, per_class: int | None = None) -> tuple[list[Image.Image], np.ndarray, list[str]]:
    """scikit-learn's 8x8 digits upscaled to `size` px RGB (optionally the first `per_class` of each class)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = np.arange(len(d.target))
    if per_class:
        keep = np.concatenate([np.flatnonzero(d.target == c)[:per_class] for c in range(10)])
        keep.sort()
    images = []
    for i in keep:
        gray = (d.images[i] * (255 / 16)).astype(np.uint8)
        images.append(Image.fromarray(gray).resize((size, size), Image.Resampling.NEAREST).convert("RGB"))
    return images, d.target[keep].astype(np.int64), [str(c) for c in range(10)]


def split_indices(labels: np.ndarray, val_every: int = 5) -> dict[str, np.ndarray]:
    """A fixed split: every `val_every`-th sample to val, the rest to train."""
    idx = np.arange(len(labels))
    return {"train": idx[idx % val_every != 0], "val": idx[idx % val_every == 0]}


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_folder(root: Path, images, labels, names, splits) -> Path:
    """<root>/<split>/<class>/<i:05d>.png"""
    for split, idx in splits.items():
        for i in idx:
            path = root / split / names[labels[i]] / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            images[i].save(path)
    return root


def write_shards(root: Path, images, labels, names, splits, per_shard: int = 100, classes_file: bool = True) -> Path:
    """<root>/<split>-000000.tar ... with webdataset.ShardWriter; keys `<split>/<class>/<i:05d>`,
    members png + cls (the ids match write_folder's relative paths)."""
    import webdataset as wds

    root.mkdir(parents=True, exist_ok=True)
    for split, idx in splits.items():
        with wds.ShardWriter(str(root / f"{split}-%06d.tar"), maxcount=per_shard, verbose=0) as sink:
            for i in idx:
                sink.write({"__key__": f"{split}/{names[labels[i]]}/{i:05d}", "png": png_bytes(images[i]),
                            "cls": str(int(labels[i])).encode()})
    if classes_file:
        (root / "classes.txt").write_text("".join(f"{n}\n" for n in names))
    return root


def write_hf(root: Path, images, labels, names, splits, val_name: str = "validation") -> Path:
    """A DatasetDict (Image + ClassLabel features) saved with save_to_disk; val is called `val_name`."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(names))})
    parts = {}
    for split, idx in splits.items():
        rows = {"image": [{"bytes": png_bytes(images[i]), "path": f"{names[labels[i]]}/{i:05d}.png"} for i in idx],
                "label": [int(labels[i]) for i in idx]}
        parts[val_name if split == "val" else split] = datasets.Dataset.from_dict(rows, features=features)
    datasets.DatasetDict(parts).save_to_disk(str(root))
    return root


def bad_data(root: Path) -> dict[str, Path]:
    """Broken shards and datasets for the bad-input table (3 digits per class, 16 px)."""
    import datasets

    images, labels, names = digits_images(16, per_class=3)
    splits = split_indices(labels, val_every=3)
    out = {"wds": write_shards(root / "wds", images, labels, names, splits, per_shard=100)}
    out["wds_cut"] = write_shards(root / "wds_cut", images, labels, names, splits)
    shard = out["wds_cut"] / "train-000000.tar"
    shard.write_bytes(shard.read_bytes()[:5000 + 100])  # cut short: the shard's last member is truncated
    out["wds_trunc"] = write_shards(root / "wds_trunc", images, labels, names, splits)
    shard = out["wds_trunc"] / "train-000000.tar"
    data = shard.read_bytes()
    start = data.find(b"\x89PNG")  # the first image member: its pixels zeroed, the tar framing kept
    shard.write_bytes(data[:start + 40] + b"\0" * 60 + data[start + 100:])
    out["wds_nolabel"] = root / "wds_nolabel"
    import webdataset as wds

    out["wds_nolabel"].mkdir()
    for split, idx in splits.items():
        with wds.TarWriter(str(out["wds_nolabel"] / f"{split}-000000.tar")) as sink:
            for i in idx:
                sink.write({"__key__": f"{split}/{i:05d}", "png": png_bytes(images[i]), "txt": b"no label here"})
    out["wds_empty"] = root / "empty-000000.tar"
    with wds.TarWriter(str(out["wds_empty"])):
        pass
    out["classes3"] = root / "classes3.txt"
    out["classes3"].write_text("zero\none\ntwo\n")
    out["wids_pipe"] = root / "evil.json"
    out["wids_pipe"].write_text('{"wids_version": 1, "shardlist": [{"url": "pipe:echo pwned", "nsamples": 1}]}')
    out["hf"] = write_hf(root / "hf", images, labels, names, splits)
    saved = datasets.load_from_disk(str(out["hf"]))  # parquet files, the validation one empty
    saved["train"].to_parquet(str(root / "hf_empty" / "train-00000-of-00001.parquet"))
    saved["validation"].select([]).to_parquet(str(root / "hf_empty" / "validation-00000-of-00001.parquet"))
    out["hf_empty"] = root / "hf_empty"
    return out
