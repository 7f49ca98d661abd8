"""Tar shards written the ways shards in the wild are written: webdataset's TarWriter (PAX headers,
one per member for its float mtime) and Python's tarfile in ustar (long paths split into a name
prefix), GNU (././@LongLink) and PAX format; and a loopback http server.

Each sample's image is one solid grey level, so a sample read back can be told from any other
(a lost, merged or swapped sample changes what a test sees)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import tarfile
import threading
from pathlib import Path
from typing import Iterator

from PIL import Image

WRITERS = ("tarwriter", "tarfile_ustar", "tarfile_gnu", "tarfile_pax")


def solid(value: int, ext: str, size: int = 8) -> bytes:
    """An image of grey level `value`, encoded as `ext` says (jpg/jpeg: JPEG, webp: lossless WebP, else PNG)."""
    buf = io.BytesIO()
    fmt = {"jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}.get(ext.lower(), "PNG")
    Image.new("RGB", (size, size), (value, value, value)).save(buf, format=fmt, quality=100, lossless=True)
    return buf.getvalue()


def grey(data: bytes) -> int:
    """The grey level of a `solid` image's bytes."""
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("L").getpixel((0, 0))


def write_tar(path: Path, samples: list[tuple[str, dict[str, bytes]]], writer: str) -> Path:
    """`samples` ([(key, {ext: bytes})]) as the tar `path`, members `<key>.<ext>` in order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if writer == "tarwriter":
        import webdataset as wds

        with wds.TarWriter(str(path)) as sink:
            for key, members in samples:
                sink.write({"__key__": key, **members})
        return path
    fmt = {"tarfile_ustar": tarfile.USTAR_FORMAT, "tarfile_gnu": tarfile.GNU_FORMAT, "tarfile_pax": tarfile.PAX_FORMAT}[writer]
    with tarfile.open(path, "w", format=fmt, encoding="utf-8") as tar:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def sample(key: str, value: int, label: int, ext: str = "png", label_ext: str = "cls") -> tuple[str, dict[str, bytes]]:
    return key, {ext: solid(value, ext), label_ext: str(label).encode()}


@contextlib.contextmanager
def http_server(folder: Path, handler: type | None = None) -> Iterator[str]:
    """Serve `folder` on loopback for the duration (with `handler`, a SimpleHTTPRequestHandler
    subclass, when given); yields the base url."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(handler or Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
