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

import io
import logging
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from vitcli.core.errors import UserError
from vitcli.core.io import write_json, write_text
from vitcli.data.files import DECODE_ERRORS
from vitcli.data.sources.shard_index import Descriptor, build_index, wids_descriptor

log = logging.getLogger("vitcli")

KEEP_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


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


def write_split(split: Any, name: str, out: Path, shard_size: int, max_bad: float,
                advance: Callable[[int], None] = lambda n: None) -> dict:
    """Write one split's shards (resuming after the last complete one) and its wids index."""
    import webdataset as wds


    n = len(split)
    shards = -(-n // shard_size)
    bad: list[str] = []
    read_raw = raw_reader(split)
    for j in range(shards):
        dest = out / f"{name}-{j:06d}.tar"
        rows = range(j * shard_size, min(n, (j + 1) * shard_size))
        if dest.is_file():
            advance(len(rows))
            continue
        tmp = out / f".{dest.name}.tmp"
        with wds.TarWriter(str(tmp)) as sink:
            for i in rows:
                try:
                    data, ext = encoded_image(split, read_raw, i)
                except (*DECODE_ERRORS, FileNotFoundError) as err:
                    bad.append(f"{split.ids[i]} ({type(err).__name__}: {err})"[:160])
                    if len(bad) > max_bad * n:
                        raise UserError(f"more than {max_bad:.0%} of {n} images in split '{name}' cannot be "
                                        f"decoded, e.g. {bad[0]}; check the dataset copy") from None
                    continue
                finally:
                    advance(1)
                sink.write({"__key__": sample_key(split.ids[i]), ext: data, "cls": str(int(split.labels[i])).encode()})
        os.replace(tmp, dest)
    urls = [str(out / f"{name}-{j:06d}.tar") for j in range(shards)]
    index = build_index(Descriptor(urls, [None] * shards), ("jpg", "png", "webp"), "cls", False, lambda u: u, None)
    write_json(out / f"{name}.json", wids_descriptor(index, base=str(out), name=name))  # the split is done
    if bad:
        log.warning(f"skipped {len(bad)} unreadable image(s) in split '{name}': {', '.join(bad[:3])}")
    return {"count": int(index.counts.sum()), "shards": shards, "skipped": len(bad), "skipped_paths": bad[:10]}


def write_shards(splits: dict[str, Any], class_names: list[str], out: Path, shard_size: int, max_bad: float,
                 wanted: list[str] | None, overwrite: bool, progress: Callable[[str, int], Callable[[int], None]]) -> dict:
    """Every wanted split (default: all) as shards under `out`; returns {split: counts}."""
    if shard_size < 1:
        raise UserError(f"prepare.shard_size={shard_size} must be at least 1 sample per shard")
    out.mkdir(parents=True, exist_ok=True)
    classes = out / "classes.txt"
    text = "".join(f"{c}\n" for c in class_names)
    if classes.is_file() and classes.read_text(encoding="utf-8") != text and not overwrite:
        raise UserError(f"{out} already holds shards of other classes ({classes}); use another out= or "
                        "prepare.overwrite=true")
    write_text(classes, text)
    done = {}
    for name in wanted or list(splits):
        if name not in splits:
            raise UserError(f"prepare.splits: '{name}' is not a split of this dataset; choose from {list(splits)}")
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
