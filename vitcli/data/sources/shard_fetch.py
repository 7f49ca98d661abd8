"""Shards that are not local files, brought here without a shell.

http(s) urls are read with urllib, other object stores (s3, gs, az, hf) through fsspec when it and
the store's package are installed. `vitcli train` copies each remote shard once into the cache dir
(streamed into a temp file there, renamed when complete, named by a hash of the url: a url never
becomes a path); `data.streaming=true` reads them as streams (open_shard). A url is handed to no
shell and to no downloader that uses one (wids' and webdataset's default openers run `curl '{url}'`
through a shell, so a quote in an index's url would run what follows it).

A `pipe:CMD` shard runs CMD in a shell, as webdataset defines it: only when the string is the
user's own (data.train= / data.val= / data.test=, on the command line or in a config file),
never one read from an index file, never a file a glob matched (that is a local path, whatever
its name).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

from vitcli.core.errors import UserError

URLLIB_SCHEMES = ("http", "https")
FSSPEC_SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "abfss", "hf")
FETCH_ERRORS = (OSError, ValueError, http.client.HTTPException)  # urllib's URLError/HTTPError are OSErrors
MIN_FREE_BYTES = 1 << 30  # a fetch stops before the cache's filesystem has less than this left
FREE_CHECK_BYTES = 64 << 20  # ... looked at every this many bytes copied


def is_local(url: str) -> bool:
    return not url.startswith("pipe:") and urlparse(url).scheme in ("", "file")


def local_path(url: str) -> str:
    return urlparse(url).path if url.startswith("file:") else url


def shown(url: str) -> str:
    """A url for a one-line message (quoted, escapes kept, cut short)."""
    return repr(url if len(url) <= 120 else url[:117] + "...")


def check_remote(url: str, where: str) -> None:
    """Refuse a remote url vitcli would not open (an unknown scheme, an fsspec chain)."""
    scheme = urlparse(url).scheme
    if scheme not in URLLIB_SCHEMES + FSSPEC_SCHEMES or "::" in url:
        raise UserError(f"{where}: shard url {shown(url)} is not a local path or a {'/'.join(URLLIB_SCHEMES)}/"
                        f"{'/'.join(FSSPEC_SCHEMES)} url; fix the url")


def open_shard(url: str, commands: bool) -> BinaryIO:
    """A readable stream of the shard at `url`; `pipe:` urls only when `commands` (the user's own)."""
    if is_local(url):
        return open(os.path.expanduser(local_path(url)), "rb")
    if url.startswith("pipe:"):
        if not commands:
            raise UserError(f"shard {shown(url)} is a command; commands are taken only from your own "
                            "data.train=/data.val=/data.test=, never from a file inside a dataset")
        from webdataset.gopen import gopen_pipe

        return gopen_pipe(url)
    check_remote(url, "data")
    if urlparse(url).scheme in URLLIB_SCHEMES:
        import urllib.request

        return WholeBody(urllib.request.urlopen(url, timeout=60), url)  # follows redirects to http(s)/ftp only
    try:
        import fsspec

        return fsspec.open(url, "rb").open()
    except ImportError as err:
        raise UserError(f"shard {shown(url)} needs fsspec and the package for its store ({err.name}): "
                        "add fsspec and its store's package (s3fs, gcsfs or adlfs) to this environment") from None


def fetch(url: str, cache: Path, commands: bool) -> str:
    """A shard's local path: local files as they are, remote ones copied once into `cache`/wds."""
    if is_local(url):
        return os.path.expanduser(local_path(url))
    dest = cache / "wds" / f"{hashlib.sha256(url.encode()).hexdigest()[:24]}.tar"
    if dest.is_file():
        return str(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        if url.startswith("pipe:") and commands:  # the user's own command: its stdout is the shard
            with open(tmp, "wb") as out:
                done = subprocess.run(url[5:], shell=True, stdout=out, stderr=subprocess.PIPE)
            if done.returncode != 0:
                raise UserError(f"shard command failed ({done.returncode}): {url[5:][:80]}: "
                                f"{done.stderr.decode(errors='replace').strip()[-200:]!r}")
        else:
            try:
                with open_shard(url, commands) as src, open(tmp, "wb") as out:
                    copy_whole(src, out, url, dest.parent)
            except FETCH_ERRORS as err:
                raise UserError(f"cannot fetch shard {shown(url)} ({type(err).__name__}: {repr(str(err)[:120])[1:-1]}); check "
                                "the url and the network") from None
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return str(dest)


class WholeBody:
    """An http(s) response read to the end the server announced (Content-Length): urllib returns a
    body cut short by a closed connection as if it were whole; this raises at that early end, so a
    fetched copy is never kept and a streamed shard never ends quietly at a member boundary."""

    def __init__(self, response: Any, url: str):
        self.response, self.url, self.got = response, url, 0
        self.expected = response.length if isinstance(getattr(response, "length", None), int) else None

    def read(self, n: int = -1) -> bytes:
        rest = n is None or n < 0  # read() to the end; read(n) ends with b"" at the end
        data = self.response.read() if rest else self.response.read(n)
        self.got += len(data)
        ended = rest or (n > 0 and not data)
        if ended and self.expected is not None and self.got < self.expected:
            raise UserError(f"cannot fetch shard {shown(self.url)}: the server announced {self.expected} bytes and "
                            f"sent {self.got} (the connection closed early); run again, or check the server")
        return data

    def close(self) -> None:
        self.response.close()

    def __enter__(self) -> "WholeBody":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def copy_whole(src: BinaryIO, out: BinaryIO, url: str, cache: Path) -> None:
    """Copy a fetched shard (whole: WholeBody), not past the last MIN_FREE_BYTES of the cache's
    filesystem (a url that never ends, or a shard larger than the disk, stops with one line instead
    of filling it)."""
    copied, checked = 0, 0
    while chunk := src.read(1 << 20):
        out.write(chunk)
        copied += len(chunk)
        if copied - checked >= FREE_CHECK_BYTES:
            checked = copied
            if shutil.disk_usage(cache).free < MIN_FREE_BYTES:
                raise UserError(f"fetching shard {shown(url)} stopped after {copied >> 20} MiB: less than "
                                f"{MIN_FREE_BYTES >> 30} GiB is left where the cache is ({cache}); free space or "
                                "set VITCLI_CACHE to a larger disk")
