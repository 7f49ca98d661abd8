"""The samples of one WebDataset tar shard, read from its headers with Python's tarfile.

tarfile reads every header form a shard may carry: ustar name prefixes (webdataset's TarWriter
default), GNU long names (`././@LongLink`) and PAX paths (names over 100 bytes, non-ASCII names),
all as UTF-8. Members are grouped into samples as webdataset's streaming reader groups them
(regular files only, `__meta__` files skipped, the key is the name up to the first dot of its
base name, extensions compared in lower case: `x.JPEG` is a `jpeg` member), so the indexed and
the streamed reader see the same samples.

A shard is data, not instructions: a member name that is absolute, climbs out with `..`, holds
control characters or is not UTF-8, a sample with two members of one extension or with two image
members, a header that cannot be read, is refused with one line instead of being guessed at.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tarfile
from dataclasses import dataclass
from typing import BinaryIO, Sequence

from vitcli.core.errors import UserError

SKIP_META = re.compile(r"__[^/]*__($|/)")  # webdataset's tar_file_iterator skips these (its skip_meta)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_LABEL_BYTES = 1 << 24  # a label member is a number or a small json; a larger one is not read


@dataclass
class ShardSamples:
    """Per sample of one shard, in tar order: the image member's name (its id), the label (-1 when
    the split has none), and where the image member's bytes lie in the shard."""

    ids: list[bytes]
    labels: list[int]
    offsets: list[int]
    sizes: list[int]


def base_plus_ext(name: str) -> tuple[str | None, str | None]:
    """(key, extension) as webdataset splits a member name; (None, None) for a name without one."""
    from webdataset.tariterators import base_plus_ext as split

    return split(name)


def check_name(name: str, shard: str) -> None:
    """Refuse a member name that could mean a path outside the shard, or that is not text."""
    try:
        name.encode("utf-8")  # tarfile keeps bytes that are not UTF-8 as surrogates: they fail here
    except UnicodeEncodeError:
        raise UserError(f"shard {shard}: member name {name!r} is not UTF-8; rewrite the shard with UTF-8 "
                        "names (vitcli prepare format=wds)") from None
    if name.startswith("/") or ".." in name.split("/") or CONTROL.search(name):
        raise UserError(f"shard {shard}: member name {name!r} is absolute, climbs out with '..' or holds control "
                        "characters; a shard may only hold relative names (rewrite it)")


def read_members(path: str) -> tuple[BinaryIO, list[tarfile.TarInfo]]:
    """The open shard and its members (headers only; the data is not read), checked to be whole."""
    name = os.path.basename(path)
    if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or a device would block or never end
        raise UserError(f"shard {path} is not a regular file; give tar files")
    f = open(path, "rb")
    try:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise UserError(f"shard {path} is empty; rewrite it (vitcli prepare format=wds) or drop it from the pattern")
        try:
            with tarfile.open(fileobj=f, mode="r:", encoding="utf-8", errors="surrogateescape") as tar:
                members, end = tar.getmembers(), tar.offset
        except tarfile.ReadError as err:
            f.seek(size - size % 512 - 512 if size >= 512 else 0)
            cut = size % 512 or f.read(512) != bytes(512)  # a whole tar ends with zero blocks
            what = "is truncated (no end-of-archive block)" if cut else "is not a readable tar file"
            raise UserError(f"shard {path} {what} ({err}); re-download or rewrite it") from None
        last = members[-1].offset_data + members[-1].size if members else 0
        if last > size or size - end < 512:
            raise UserError(f"shard {path} is truncated ({size} bytes, no end-of-archive block after its last "
                            "member); re-download or rewrite it")
        f.seek(end)  # tarfile stops quietly at a header it cannot parse: what follows must be zeros
        while chunk := f.read(1 << 20):
            if chunk.count(0) != len(chunk):
                raise UserError(f"shard {name} holds unreadable data after its member {len(members)} (byte {end}: a "
                                "corrupt header, or tars concatenated); re-download or rewrite it")
        for m in members:
            check_name(m.name, name)
            if m.issparse():
                raise UserError(f"shard {name}: member {m.name!r} is a sparse file; rewrite the shard")
        return f, members
    except BaseException:
        f.close()
        raise


def group_samples(members: list[tarfile.TarInfo], shard: str) -> list[tuple[str, dict[str, tarfile.TarInfo]]]:
    """[(key, {lower-case extension: member})] in tar order, as webdataset's group_by_keys groups them."""
    samples: list[tuple[str, dict[str, tarfile.TarInfo]]] = []
    for m in members:
        if not m.isreg() or SKIP_META.match(m.name):
            continue
        key, ext = base_plus_ext(m.name)
        if key is None or ext is None:
            continue
        ext = ext.lower()
        if not samples or samples[-1][0] != key:
            samples.append((key, {}))
        group = samples[-1][1]
        if ext in group:
            raise two_members(shard, key, ext, group[ext].name, m.name)
        group[ext] = m
    return samples


def two_members(shard: str, key: str, ext: str, first: str, second: str) -> UserError:
    """The refusal of a sample with two members of one extension (both readers)."""
    return UserError(f"shard {shard}: sample '{key}' has two '{ext}' members ({first!r} and {second!r}); keys must "
                     "be unique, rewrite the shard")


def two_images(shard: str, key: str, first: str, second: str, first_ext: str) -> UserError:
    """The refusal of a sample with two image members (both readers): which one is meant is the user's call."""
    return UserError(f"shard {shard}: sample '{key}' has two images ({first!r} and {second!r}); keep one, or choose "
                     f"with data.image_key={first_ext}")


def shard_samples(path: str, image_keys: Sequence[str], label_key: str, labelled: bool) -> ShardSamples:
    """The samples of one local shard: ids, labels (read from the label members) and image places."""
    name = os.path.basename(path)
    json_field = label_key[5:] if label_key.startswith("json.") else None
    want = "json" if json_field else label_key
    f, members = read_members(path)
    out = ShardSamples([], [], [], [])
    with f:
        for key, group in group_samples(members, name):
            images = [k for k in image_keys if k in group]
            if not images:
                raise UserError(f"shard {name}: sample '{key}' has no image member ({'/'.join(image_keys)}; it has "
                                f"{', '.join(sorted(group))}); set data.image_key=")
            if len(images) > 1:
                raise two_images(name, key, group[images[0]].name, group[images[1]].name, images[0])
            image = group[images[0]]
            out.ids.append(image.name.encode("utf-8"))
            out.offsets.append(image.offset_data)
            out.sizes.append(image.size)
            if want not in group:
                if labelled:
                    raise UserError(f"shard {name}: sample '{key}' has no '{want}' member (it has "
                                    f"{', '.join(sorted(group))}); set data.label_key= to the member holding the label")
                out.labels.append(-1)
                continue
            out.labels.append(parse_label(read_member(f, group[want], name), json_field, f"shard {name}: sample '{key}'"))
    return out


def read_member(f: BinaryIO, member: tarfile.TarInfo, shard: str) -> bytes:
    if member.size > MAX_LABEL_BYTES:
        raise UserError(f"shard {shard}: label member {member.name!r} is {member.size} bytes; a label is a number "
                        "or a small json (check data.label_key=)")
    f.seek(member.offset_data)
    return f.read(member.size)


def parse_label(raw: bytes, json_field: str | None, where: str) -> int:
    """The class index in a label member: its text, or a field of its json (`json.<field>`)."""
    try:
        if json_field:
            value = json.loads(raw)
            for part in json_field.split("."):
                value = value[part]
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise TypeError(value)
            return int(value)
        return int(raw.decode().strip())
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError):
        what = f"json field '{json_field}'" if json_field else "label member"
        raise UserError(f"{where}: the {what} is not an integer class index ({raw[:40]!r})") from None
