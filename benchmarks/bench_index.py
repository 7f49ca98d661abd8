"""Indexing an ImageNet-layout tree: vitcli's folder index vs timm's create_dataset, side by side.

    python benchmarks/bench_index.py [--files 1280000] [--classes 1000] [--root DIR] [--repeat 2]

Builds (once; reused when --root already holds it) `<root>/train/<class>/<n>.JPEG` with
empty files, then times, in this one process and alternating:

- timm:   `timm.data.create_dataset("", root=<root>/train)` (ImageFolder reader:
          `find_images_and_targets`, os.walk + natural-key sort, a list of (path, label) tuples)
- vitcli: `scan_class_folders` (os.scandir on bytes names, one buffer of paths + int64 labels)
- vitcli cached: the same index read back from its cache (what a second run does)

and measures the memory each keeps per file with tracemalloc (separate runs, so tracing
does not slow the timed ones). Prints seconds, microseconds and bytes per file, and the ratios.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
import tracemalloc
from pathlib import Path


def build_tree(root: Path, files: int, classes: int) -> None:
    """`root/train/nXXXXXXXX/nXXXXXXXX_<i>.JPEG`, empty, ImageNet-style names; skipped when complete."""
    marker = root / f".complete_{files}_{classes}"
    if marker.exists():
        return
    t0 = time.perf_counter()
    per_class = -(-files // classes)
    made = 0
    for c in range(classes):
        wnid = f"n{1440764 + 7 * c:08d}"
        folder = root / "train" / wnid
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(min(per_class, files - made)):
            os.close(os.open(folder / f"{wnid}_{10026 + 3 * i}.JPEG", os.O_CREAT | os.O_WRONLY, 0o644))
        made += min(per_class, files - made)
    # old folder mtimes, so the vitcli cache is allowed to hold the index (see folder_index RACY_NS)
    past = time.time() - 3600
    for d in [root / "train", *(root / "train").iterdir()]:
        os.utime(d, (past, past))
    marker.touch()
    print(f"built {made:,} empty files in {classes} folders under {root} in {time.perf_counter() - t0:.1f} s")


def run_timm(split_dir: Path):
    from timm.data import create_dataset

    ds = create_dataset("", root=str(split_dir))
    return ds, len(ds)


def run_vitcli(split_dir: Path):
    from vitcli.data.sources.folder_index import scan_class_folders

    folders = sorted(d.name for d in os.scandir(split_dir) if d.is_dir())
    index = scan_class_folders(split_dir.parent, split_dir.name, folders, (".jpeg", ".jpg", ".png"))
    return index, len(index.labels)


def run_vitcli_cached(split_dir: Path, cache: Path):
    from vitcli.data.sources.folder_index import index_folders

    folders = sorted(d.name for d in os.scandir(split_dir) if d.is_dir())
    index, origin = index_folders(split_dir.parent, split_dir.name, folders, (".jpeg", ".jpg", ".png"), cache)
    return index, len(index.labels)


def timed(fn, *args) -> tuple[float, int]:
    gc.collect()
    t0 = time.perf_counter()
    obj, n = fn(*args)
    dt = time.perf_counter() - t0
    del obj
    gc.collect()
    return dt, n


def traced_bytes(fn, *args) -> int:
    """Bytes still allocated (Python objects and numpy buffers) while the result is alive."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    obj, _ = fn(*args)
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del obj
    return kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1_280_000)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "vitcli_bench_index")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs of each, alternating")
    ap.add_argument("--no-memory", action="store_true", help="skip the tracemalloc runs")
    args = ap.parse_args()

    build_tree(args.root, args.files, args.classes)
    import timm.data  # noqa: F401  (imports are not part of the timing)

    import vitcli.data.sources.folder_index  # noqa: F401
    split_dir = args.root / "train"
    cache = args.root / "cache"
    run_vitcli_cached(split_dir, cache)  # write the cache once (untimed)
    os.listdir(split_dir)  # warm the dentry cache for everyone alike
    results: dict[str, list[float]] = {"timm": [], "vitcli": [], "vitcli cached": []}
    counts = {}
    for _ in range(args.repeat):
        for name, fn, extra in (("timm", run_timm, ()), ("vitcli", run_vitcli, ()),
                                ("vitcli cached", run_vitcli_cached, (cache,))):
            dt, n = timed(fn, split_dir, *extra)
            results[name].append(dt)
            counts[name] = n
    memory = {}
    if not args.no_memory:
        memory = {"timm": traced_bytes(run_timm, split_dir), "vitcli": traced_bytes(run_vitcli, split_dir),
                  "vitcli cached": traced_bytes(run_vitcli_cached, split_dir, cache)}
    assert len(set(counts.values())) == 1, f"file counts differ: {counts}"
    n = counts["timm"]
    print(f"\n{n:,} files in {args.classes} class folders ({args.repeat} timed runs each, best shown)")
    print(f"{'reader':<15} {'seconds':>8} {'us/file':>8} {'bytes/file':>11}")
    for name, times in results.items():
        best = min(times)
        mem = f"{memory[name] / n:11.1f}" if memory else f"{'-':>11}"
        print(f"{name:<15} {best:8.2f} {best / n * 1e6:8.2f} {mem}   (all runs: {', '.join(f'{t:.2f}' for t in times)})")
    t_timm = min(results["timm"])
    print(f"\nspeed-up vs timm: scan {t_timm / min(results['vitcli']):.1f}x, "
          f"cached {t_timm / min(results['vitcli cached']):.1f}x")
    if memory:
        print(f"memory vs timm: scan {memory['timm'] / memory['vitcli']:.1f}x less")


if __name__ == "__main__":
    main()
