"""The folder index: same files and labels as timm's reader, compact columns, a cache that
notices added and removed files, and no caching of folders touched during the scan."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from vitcli.data.sources.folder_index import (
    StringColumn,
    index_folders,
    index_path,
    load_cached,
    scan_class_folders,
)

EXTS = (".jpg", ".jpeg", ".png")


def make_tree(root: Path, counts: dict[str, int], old: bool = True) -> Path:
    """root/train/<class>/<i>.JPEG (empty files), plus a nested folder and files to ignore."""
    for cls, n in counts.items():
        folder = root / "train" / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (folder / f"{cls}_{i}.JPEG").touch()
        (folder / "notes.txt").touch()
    (root / "train" / "b" / "deeper").mkdir(parents=True, exist_ok=True)
    (root / "train" / "b" / "deeper" / "x.png").touch()
    if old:
        age(root)
    return root


def age(root: Path) -> None:
    """Set every folder's mtime an hour back, as on a dataset copied long ago."""
    past = time.time() - 3600
    for d, _, _ in os.walk(root):
        os.utime(d, (past, past))


def test_scan_matches_timm_reader(tmp_path):
    from timm.data.readers.reader_image_folder import find_images_and_targets

    root = make_tree(tmp_path, {"a": 3, "b": 2, "c": 4})
    index = scan_class_folders(root, "train", ["a", "b", "c"], EXTS)
    ours = sorted((str(root) + "/" + p, int(y)) for p, y in zip(index.rel_paths, index.labels))
    timm_samples, _ = find_images_and_targets(str(root / "train"), leaf_name_only=False)
    # timm labels nested files by their own folder (b/deeper); ours by the class folder
    timm_paths = sorted(p for p, _ in timm_samples)
    assert [p for p, _ in ours] == timm_paths
    assert dict(zip(*np.unique(index.labels, return_counts=True))) == {0: 3, 1: 3, 2: 4}
    assert index.rel_paths[3] == "train/b/b_0.JPEG" and index.rel_paths[5] == "train/b/deeper/x.png"


def test_string_column_take_and_prefix():
    col = StringColumn.from_bytes([b"x/1.jpg", b"yy/22.png", "z/\u00e9.jpg".encode()], prefix="/r/")
    assert list(col) == ["/r/x/1.jpg", "/r/yy/22.png", "/r/z/\u00e9.jpg"]
    sub = col.take(np.array([2, 0, 2]))
    assert list(sub) == ["/r/z/\u00e9.jpg", "/r/x/1.jpg", "/r/z/\u00e9.jpg"] and sub[-1] == "/r/z/\u00e9.jpg"
    assert col.with_prefix("")[1] == "yy/22.png" and col[0:2] == ["/r/x/1.jpg", "/r/yy/22.png"]
    with pytest.raises(IndexError):
        col[3]


def test_memory_is_path_bytes_plus_offsets_and_labels(tmp_path):
    root = make_tree(tmp_path, {"a": 50, "b": 50})
    index = scan_class_folders(root, "train", ["a", "b"], EXTS)
    path_bytes = sum(len(p.encode()) for p in index.rel_paths)
    assert index.nbytes == path_bytes + 8 * (len(index.labels) + 1) + 8 * len(index.labels)


def test_cache_is_reused_until_a_folder_changes(tmp_path):
    root = make_tree(tmp_path / "data", {"a": 3, "b": 2})
    cache = tmp_path / "cache"
    first, origin = index_folders(root, "train", ["a", "b"], EXTS, cache)
    assert origin == "scan"
    again, origin = index_folders(root, "train", ["a", "b"], EXTS, cache)
    assert origin == "cache" and list(again.rel_paths) == list(first.rel_paths)
    assert again.labels.tolist() == first.labels.tolist()
    (root / "train" / "a" / "new.jpg").touch()  # an added file changes its folder's mtime
    added, origin = index_folders(root, "train", ["a", "b"], EXTS, cache)
    assert origin.startswith("scan") and "train/a/new.jpg" in list(added.rel_paths)
    age(root)
    index_folders(root, "train", ["a", "b"], EXTS, cache)
    (root / "train" / "b" / "deeper" / "x.png").unlink()  # removal in a nested folder
    removed, origin = index_folders(root, "train", ["a", "b"], EXTS, cache)
    assert origin.startswith("scan") and "train/b/deeper/x.png" not in list(removed.rel_paths)


def test_folders_touched_just_before_the_scan_are_not_cached(tmp_path):
    root = make_tree(tmp_path / "data", {"a": 2}, old=False)
    cache = tmp_path / "cache"
    _, origin = index_folders(root, "train", ["a"], EXTS, cache)
    assert origin == "scan (not cached)"
    assert not index_path(cache, root, "train", ["a"], EXTS).exists()
    assert load_cached(index_path(cache, root, "train", ["a"], EXTS)) is None


def _rank_main(rank: int, world: int, root: str, port: int, out: str) -> None:
    """One DDP rank (gloo): index the tree through rank0_only; record who scanned and what it got."""
    import json

    import torch.distributed as torch_dist

    from vitcli.data.sources import folder_index as FI

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch_dist.init_process_group("gloo", rank=rank, world_size=world)
    scanned = []
    real = FI.scan_class_folders
    FI.scan_class_folders = lambda *a: scanned.append(rank) or real(*a)
    index = FI.rank0_only(lambda: FI.index_folders(Path(root), "train", ["a", "b"], EXTS, None)[0])
    Path(out, f"{rank}.json").write_text(json.dumps({"scanned": scanned, "paths": list(index.rel_paths)}))
    torch_dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes that each import torch: about 20 s idle, far more on a busy box
def test_under_ddp_only_rank0_reads_the_tree(tmp_path):
    import json
    import socket

    import torch.multiprocessing as mp

    root = make_tree(tmp_path / "data", {"a": 3, "b": 2})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank_main, args=(2, str(root), port, str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["scanned"] == [0] and ranks[1]["scanned"] == []
    assert ranks[0]["paths"] == ranks[1]["paths"] and len(ranks[1]["paths"]) == 6
