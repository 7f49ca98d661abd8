"""Small file helpers every layer shares: atomic writes, JSON / JSONL / CSV records, vitcli's cache dir.

An atomic write goes to a temp file beside the target, is fsynced and renamed over
it, so a reader (or a crash) never sees half a file: checkpoints, summaries,
predictions, submissions and pack manifests all go through `atomic_write`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable


def cache_dir(setting: str | None = None) -> Path:
    """Where vitcli caches indexes: `data.cache_dir`, else $VITCLI_CACHE, else $XDG_CACHE_HOME/vitcli
    (~/.cache/vitcli)."""
    if setting:
        return Path(setting).expanduser()
    if os.environ.get("VITCLI_CACHE"):
        return Path(os.environ["VITCLI_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vitcli"


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call write(file_obj) on a temp file beside `path`, fsync, then rename over it.

    >>> atomic_write(Path("out.bin"), lambda f: f.write(b"data"))  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def finite_or_none(value: Any) -> Any:
    """NaN/inf floats become None (JSON has no such numbers)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_json(path: Path, obj: Any) -> None:
    """Pretty JSON, written atomically (non-JSON values through str())."""
    write_bytes(path, json.dumps(obj, indent=2, default=str).encode() + b"\n")


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in `path`, or {} when the file does not exist."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps({k: finite_or_none(v) for k, v in record.items()}) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows, writing the header first when the file is new (columns: the first row's keys)."""
    if not rows:
        return
    new = not Path(path).exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows as a new CSV (columns: the first row's keys), written atomically."""
    if not rows:
        return

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())
