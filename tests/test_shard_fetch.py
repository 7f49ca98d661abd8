"""Remote shards copied into the cache are whole, or not kept: a connection that closes early (urllib
returns the short body without an error) and a url that would fill the cache's disk both stop with one
line, and nothing half-fetched stays in the cache to be read by the next run. Streamed shards
(data.streaming=true) cut short stop with the same line instead of ending quietly."""

from __future__ import annotations

import http.server
from pathlib import Path

import pytest
from tar_builders import http_server, sample, write_tar

from vitcli.core.errors import UserError
from vitcli.data.sources import shard_fetch


class Cut(http.server.SimpleHTTPRequestHandler):
    """Serves files, but announces each one's full length and sends only `send` bytes of it."""
    send: int | None = None

    def log_message(self, *args):
        pass

    def copyfile(self, source, outputfile):
        data = source.read()
        outputfile.write(data if self.send is None else data[:self.send])
        self.close_connection = True


def serve(folder: Path, send: int | None = None):
    """tar_builders.http_server whose answers stop after `send` bytes (all of them when None)."""
    return http_server(folder, handler=type("Handler", (Cut,), {"send": send}))


@pytest.fixture
def shard(tmp_path) -> Path:
    return write_tar(tmp_path / "srv" / "train-000000.tar", [sample(f"k/{i}", 10 * i, i % 3) for i in range(8)],
                     "tarwriter")


def cached(cache: Path) -> list[Path]:
    return sorted((cache / "wds").glob("*")) if (cache / "wds").is_dir() else []


def test_a_whole_shard_is_fetched_once(shard, tmp_path):
    cache = tmp_path / "cache"
    with serve(shard.parent) as base:
        path = shard_fetch.fetch(f"{base}/{shard.name}", cache, commands=False)
        assert Path(path).read_bytes() == shard.read_bytes()
    assert cached(cache) == [Path(path)]


def test_a_connection_closed_early_is_refused_and_not_cached(shard, tmp_path):
    cache = tmp_path / "cache"
    size = shard.stat().st_size
    with serve(shard.parent, send=size // 2) as base:
        with pytest.raises(UserError, match=rf"announced {size} bytes and sent {size // 2} \(the connection closed "
                                            r"early\); run again"):
            shard_fetch.fetch(f"{base}/{shard.name}", cache, commands=False)
    assert cached(cache) == []  # the next run fetches again instead of reading half a shard
    with serve(shard.parent) as base:  # a later, whole answer is taken
        assert Path(shard_fetch.fetch(f"{base}/{shard.name}", cache, commands=False)).read_bytes() == shard.read_bytes()


def test_a_fetch_stops_before_the_cache_disk_is_full(shard, tmp_path, monkeypatch):
    """The real free space of the test's disk, with the floor raised above it (no disk gets filled here)."""
    import shutil

    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setattr(shard_fetch, "MIN_FREE_BYTES", shutil.disk_usage(cache).free + (1 << 40))
    monkeypatch.setattr(shard_fetch, "FREE_CHECK_BYTES", 1)
    with serve(shard.parent) as base:
        with pytest.raises(UserError, match=r"stopped after 0 MiB: less than \d+ GiB is left where the cache is .*"
                                            r"set VITCLI_CACHE to a larger disk"):
            shard_fetch.fetch(f"{base}/{shard.name}", cache, commands=False)
    assert cached(cache) == []


def test_a_short_shard_through_a_wids_index_is_one_line(cli, shard, tmp_path, monkeypatch):
    """The whole command: `vitcli train` on an index whose train shard arrives cut."""
    import json

    monkeypatch.setenv("VITCLI_CACHE", str(tmp_path / "cache"))
    write_tar(shard.parent / "val-000000.tar", [sample(f"v/{i}", 10 * i, i % 3) for i in range(6)], "tarwriter")
    with serve(shard.parent, send=1000) as base:
        for split, n in (("train", 8), ("val", 6)):
            (tmp_path / f"{split}.json").write_text(json.dumps(
                {"wids_version": 1, "shardlist": [{"url": f"{base}/{split}-000000.tar", "nsamples": n}]}))
        proc = cli("train", "data=wds", f"data.train={tmp_path / 'train.json'}", f"data.val={tmp_path / 'val.json'}",
                   "data.num_classes=3", "data.img_size=8", "model=vit_pico", "trainer.epochs=1",
                   "trainer.progress=none", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-1500:]
    assert lines[0].startswith("vitcli: error: cannot fetch shard") and "the connection closed early" in lines[0]
    assert cached(tmp_path / "cache") == []


@pytest.mark.parametrize("workers", [0, 1])
def test_a_streamed_shard_cut_short_is_one_line(cli, tmp_path, workers):
    """data.streaming=true reads remote shards as they come: cut at a member boundary, tarfile would end
    the shard quietly (samples lost); cut mid-member, it raised webdataset's traceback."""
    import json

    folder = tmp_path / "srv"
    train = write_tar(folder / "train-000000.tar", [sample(f"k/{i}", 10 * i, i % 3) for i in range(8)], "tarwriter")
    write_tar(folder / "val-000000.tar", [sample(f"v/{i}", 10 * i, i % 3) for i in range(6)], "tarwriter")
    with serve(folder, send=train.stat().st_size // 2) as base:
        for split, n in (("train", 8), ("val", 6)):
            (tmp_path / f"{split}.json").write_text(json.dumps(
                {"wids_version": 1, "shardlist": [{"url": f"{base}/{split}-000000.tar", "nsamples": n}]}))
        proc = cli("train", "data=wds", "data.streaming=true", f"data.train={tmp_path / 'train.json'}",
                   f"data.val={tmp_path / 'val.json'}", "data.num_classes=3", "data.img_size=8", "data.batch_size=2",
                   f"data.num_workers={workers}", "model=vit_pico", "trainer.epochs=1", "trainer.progress=none",
                   f"hydra.run.dir={tmp_path / 'run'}", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-1500:]
    assert lines[0].startswith("vitcli: error: cannot fetch shard 'http://127.0.0.1:") and lines[0].endswith(
        "(the connection closed early); run again, or check the server"), lines[0]
