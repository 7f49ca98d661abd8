"""`vitcli prepare format=wds out=DIR`: any source's splits written as WebDataset shards.

    DIR/<split>-000000.tar ...   webdataset.ShardWriter layout: per sample `<key>.<ext>` (the image
                                 bytes as they were: JPEG/PNG/WebP files are copied, not re-encoded;
                                 arrays and other formats become PNG) and `<key>.cls` (the label)
    DIR/<split>.json             the split's wids index (wids_version 1, nsamples per shard), written last
    DIR/classes.txt              one class name per line, in label order

The key is the sample's id without its extension (`train/n01440764/n01440764_10026`), so the
image member's name is the id again. Shard j holds the samples [j*S, (j+1)*S) of the split
(S = prepare.shard_size, fewer where unreadable files were skipped). Each shard is written to
a temp name and renamed when complete, so a killed prepare resumes at the first missing shard;
a split whose index exists is skipped. Train with `data=wds data.root=DIR`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from vitcli.core.errors import UserError
from vitcli.core.io import write_json, write_text
from vitcli.data.files import DECODE_ERRORS
from vitcli.data.sources.shard_index import wids_descriptor
from vitcli.data.sources.tar_members import base_plus_ext, shard_samples

log = logging.getLogger("vitcli")

KEEP_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
WRITTEN_EXTS = ("jpg", "png", "webp")


def sample_key(sample_id: str) -> str:
    """The id without its extension; dots left in the file stem become '_' (webdataset splits a
    member name at the first dot of its base name)."""
    folder, _, base = sample_id.rpartition("/")
    stem = base.split(".")[0] if base.count(".") <= 1 else base.rsplit(".", 1)[0].replace(".", "_")
    return f"{folder}/{stem}" if folder else stem


def encoded_image(split: Any, read_raw: Callable[[int], bytes | None], i: int) -> tuple[bytes, str]:
    """(image bytes, extension) of sample i, checked to decode fully; original bytes kept when
    the format is JPEG/PNG/WebP. Raises one of DECODE_ERRORS when the image is unreadable."""

    raw = read_raw(i)
    if raw is None:  # arrays (digits, synthetic, packs)
        img = Image.fromarray(np.asarray(split.images[i], dtype=np.uint8))
        return png(img), "png"
    with Image.open(io.BytesIO(raw)) as img:
        fmt = img.format
        img.load()  # a truncated file raises here, as the loaders would
        if fmt in KEEP_FORMATS:
            return raw, KEEP_FORMATS[fmt]
        return png(img.convert("RGB")), "png"


def png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def raw_reader(split: Any) -> Callable[[int], bytes | None]:
    """i -> the stored bytes of sample i (a file's content, an hf image cell, a shard member),
    or None for in-memory arrays. Sources with their own decoder expose `open(transform).raw(i)`."""
    if hasattr(split, "images"):
        return lambda i: None
    if hasattr(split, "open") and hasattr(split.open(None), "raw"):
        return split.open(None).raw
    return lambda i: Path(split.paths[i]).read_bytes()


def check_keys(split: Any, name: str) -> None:
    """The member keys of a split's samples; two samples with one key (`a.jpg` and `a.png` in one
    folder, `a.b.jpg` and `a_b.jpg`) would become one sample, so they are refused."""
    keys = [sample_key(i) for i in split.ids]
    seen: dict[str, int] = {}
    for i, key in enumerate(keys):
        first = seen.setdefault(key, i)
        if first != i:
            raise UserError(f"split '{name}': {split.ids[first]} and {split.ids[i]} would both be sample '{key}' in the "
                            "shards (one key per sample); rename one of them")


def check_out(out: Path, splits: list[str]) -> None:
    """`out` may be empty or hold what prepare writes (a resume), nothing else."""
    if out.exists() and not out.is_dir():
        raise UserError(f"out={out} is a file; give a folder for the shards")
    splits_re = "|".join(re.escape(s) for s in splits)
    own = re.compile(rf"classes\.txt|({splits_re})\.json|\.?({splits_re})-\d{{6}}\.tar(\.tmp)?")
    for entry in sorted(out.iterdir()) if out.exists() else []:
        if not own.fullmatch(entry.name) or not entry.is_file():
            raise UserError(f"out={out} holds {entry.name}, which prepare did not write; prepare writes into an empty "
                            "folder or its own earlier output: use another out=")


class SplitWriter:
    """Writes one split's shards, each read back with the reader training uses and checked against
    what was written before it gets its final name (a shard that reads back wrong is never kept)."""

    def __init__(self, split: Any, name: str, out: Path, max_bad: float, advance: Callable[[int], None]):
        self.split, self.name, self.out, self.max_bad, self.advance = split, name, out, max_bad, advance
        self.keys = [sample_key(i) for i in split.ids]
        self.read_raw = raw_reader(split)
        self.bad: list[str] = []

    def shard(self, dest: Path, rows: range) -> int:
        """Write rows as the shard `dest` (or check the one an earlier prepare left); its sample count."""
        labels = self.split.labels
        if dest.is_file():
            self.advance(len(rows))
            return self.read_back(dest, [(self.keys[i], int(labels[i]), None) for i in rows], exact=False)
        tmp = dest.with_name(f".{dest.name}.tmp")
        count = self.read_back(tmp, self.write(tmp, rows), exact=True)
        os.replace(tmp, dest)
        return count

    def write(self, tmp: Path, rows: range) -> list[tuple[str, int, bytes | None]]:
        """Through webdataset's TarWriter (PAX headers: any name length, UTF-8 names); returns
        (key, label, image sha256) of each sample written."""
        import webdataset as wds

        written: list[tuple[str, int, bytes | None]] = []
        with wds.TarWriter(str(tmp)) as sink:
            for i in rows:
                try:
                    data, ext = encoded_image(self.split, self.read_raw, i)
                except (*DECODE_ERRORS, FileNotFoundError) as err:
                    self.skip(i, err)
                    continue
                finally:
                    self.advance(1)
                label = int(self.split.labels[i])
                sink.write({"__key__": self.keys[i], ext: data, "cls": str(label).encode()})
                written.append((self.keys[i], label, hashlib.sha256(data).digest()))
        return written

    def skip(self, i: int, err: Exception) -> None:
        self.bad.append(f"{self.split.ids[i]} ({type(err).__name__}: {err})"[:160])
        if len(self.bad) > self.max_bad * len(self.split):
            raise UserError(f"more than {self.max_bad:.0%} of {len(self.split)} images in split '{self.name}' cannot "
                            f"be decoded, e.g. {self.bad[0]}; check the dataset copy") from None

    def read_back(self, path: Path, expected: list[tuple[str, int, bytes | None]], exact: bool) -> int:
        """Compare the shard with `expected` (key, label, image sha256): the same samples in the same
        order (`exact`), or an ordered subset (a shard of an earlier prepare, which left out the
        images it could not decode, resumed now)."""
        got = shard_samples(str(path), WRITTEN_EXTS, "cls", True)
        want = iter(expected)
        with open(path, "rb") as f:
            for n, (sample_id, label, offset, size) in enumerate(zip(got.ids, got.labels, got.offsets, got.sizes)):
                key = base_plus_ext(sample_id.decode())[0]
                match = next((e for e in want if exact or e[0] == key), None)
                f.seek(offset)
                if match and match[:2] == (key, label) and (not match[2] or sha256(f, size) == match[2]):
                    continue
                found = f"sample {n} is '{key}' with label {label}, {'not ' + repr(match[:2]) if match else 'not expected'}"
                if exact:
                    raise UserError(f"{path} reads back wrong ({found}); the shard was not written as meant: check "
                                    "the disk, and report it")
                raise UserError(f"out={self.out} holds {path.name}, which is not this dataset's ({found}); use "
                                "another out= or prepare.overwrite=true")
        if exact and len(got.ids) != len(expected):
            raise UserError(f"{path} reads back as {len(got.ids)} samples, {len(expected)} written; check the disk, "
                            "and report it")
        return len(got.ids)


def sha256(f: Any, size: int) -> bytes:
    return hashlib.sha256(f.read(size)).digest()


def write_split(split: Any, name: str, out: Path, shard_size: int, max_bad: float,
                advance: Callable[[int], None] = lambda n: None) -> dict:
    """Write one split's shards (resuming after the last complete one), then its wids index."""
    n = len(split)
    if n == 0:
        raise UserError(f"split '{name}' has no sample to write")
    writer = SplitWriter(split, name, out, max_bad, advance)
    shards = -(-n // shard_size)
    urls = [out / f"{name}-{j:06d}.tar" for j in range(shards)]
    counts = [writer.shard(dest, range(j * shard_size, min(n, (j + 1) * shard_size))) for j, dest in enumerate(urls)]
    write_json(out / f"{name}.json", wids_descriptor([str(u) for u in urls], counts, str(out), name))  # the split is done
    if writer.bad:
        log.warning(f"skipped {len(writer.bad)} unreadable image(s) in split '{name}': {', '.join(writer.bad[:3])}")
    return {"count": int(sum(counts)), "shards": shards, "skipped": len(writer.bad), "skipped_paths": writer.bad[:10]}


def write_shards(splits: dict[str, Any], class_names: list[str], out: Path, shard_size: int, max_bad: float,
                 wanted: list[str] | None, overwrite: bool, progress: Callable[[str, int], Callable[[int], None]]) -> dict:
    """Every wanted split (default: all) as shards under `out`; returns {split: counts}."""
    if shard_size < 1:
        raise UserError(f"prepare.shard_size={shard_size} must be at least 1 sample per shard")
    for name in wanted or []:
        if name not in splits:
            raise UserError(f"prepare.splits: '{name}' is not a split of this dataset; choose from {list(splits)}")
    for name in wanted or list(splits):
        check_keys(splits[name], name)
    check_out(out, list(splits))
    out.mkdir(parents=True, exist_ok=True)
    classes = out / "classes.txt"
    text = "".join(f"{c}\n" for c in class_names)
    if classes.is_file() and classes.read_text(encoding="utf-8") != text and not overwrite:
        raise UserError(f"{out} already holds shards of other classes ({classes}); use another out= or "
                        "prepare.overwrite=true")
    write_text(classes, text)
    done = {}
    for name in wanted or list(splits):
        if overwrite:
            for old in out.glob(f"{name}-*.tar"):
                old.unlink()
            (out / f"{name}.json").unlink(missing_ok=True)
        if (out / f"{name}.json").is_file():
            log.info(f"{name}: already written ({out / f'{name}.json'}), skipping")
            continue
        done[name] = write_split(splits[name], name, out, shard_size, max_bad, progress(name, len(splits[name])))
        log.info(f"{name}: {done[name]['count']} samples in {done[name]['shards']} shard(s)")
    return done
