"""Images/s of the JPEG file path vs the packed path, side by side, at 128 and 224 px.

    python benchmarks/bench_data.py [--images 3000] [--sizes 128 224] [--threads 2]

Generates a MiniPlaces-layout tree of 128 px JPEGs, packs it once with
`vitcli.data.pack.prepare`, then times one training epoch of each loader with
the same augmentation (augmentation=basic: RandomCrop with 4 px padding + flip,
resize to the target size, normalize):

- files:  list file -> PIL decode -> torchvision transforms, torch DataLoader, 2 workers
- wds:    the same JPEGs as WebDataset shards (`vitcli prepare format=wds`, 1,000 per shard), read at
          random through wids, then the same per-sample transforms and loader as files
- hf:     the same JPEGs as a Hugging Face dataset (save_to_disk, image bytes in arrow), the same loader
- packed: memory-mapped uint8 array (packed at 128) -> batched crop/flip/resize/normalize on tensors
- packed@size: the same, packed at the training size (`prepare.size=SIZE`), so no resize per batch
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    import vitcli.core.config_store  # noqa: F401

    with initialize_config_module(config_module="vitcli.conf", version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def images_per_s(loader, epochs: int) -> float:
    """Steady-state rate: the clock starts after the first batch (worker start-up excluded)."""
    seen, t0 = 0, None
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for x, y in loader:
            if t0 is None:
                t0 = time.perf_counter()
                continue
            seen += len(y)
    return seen / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=3000, help="train images to generate (128 px JPEGs)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the file path")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of the packed path (1 leaves a core to the model; 2 spin on a busy box)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--root", help="reuse/keep the generated tree here")
    args = ap.parse_args()

    import torch
    from jpeg_trees import make_miniplaces

    from vitcli.data import create_data
    from vitcli.data.prepare import prepare

    torch.set_num_threads(args.threads)
    root = Path(args.root or tempfile.mkdtemp(prefix="bench_data_")) / "miniplaces"
    classes = 10
    if not (root / "train.txt").is_file():
        t = time.perf_counter()
        make_miniplaces(root, classes=classes, per_class=args.images // classes, val=1, test=0, size=128)
        print(f"generated {args.images} 128px JPEGs in {time.perf_counter() - t:.1f} s under {root}")
    base = ["data=miniplaces", f"data.root={root}", "augmentation=basic", f"data.batch_size={args.batch_size}",
            f"data.num_workers={args.workers}", "trainer.device=cpu"]
    manifest = prepare(compose(base).data, None, ["train", "val"], workers=args.workers, overwrite=False)
    print(f"prepare (one-off): {manifest['splits']['train']['count']} train images packed in "
          f"{manifest['splits']['train']['seconds']} s ({args.workers} workers)")
    sources = {"wds": write_wds(root, base), "hf": write_hf(root, base)}
    print(f"{'img_size':>8} {'files img/s':>12} {'wds img/s':>10} {'hf img/s':>9} {'packed img/s':>13} {'ratio':>7} "
          f"{'packed@size img/s':>18} {'ratio':>7}   (cpu, {args.workers} workers / {args.threads} threads, "
          f"batch {args.batch_size})")
    for size in args.sizes:
        rates = []
        for fmt in ("files", "packed"):
            loader = create_data(compose(base + [f"data.img_size={size}", f"data.format={fmt}"])).loader("train")
            rates.append(images_per_s(loader, args.epochs))
        common = [o for o in base if not o.startswith(("data=", "data.root="))]
        streams = [images_per_s(create_data(compose(common + src + [f"data.img_size={size}"])).loader("train"),
                                args.epochs) for src in sources.values()]
        # packed@size: `vitcli prepare prepare.size=SIZE` packs at the training size, so batches skip the resize
        at_size = base + [f"data.packed_dir={root}/packed_{size}"]
        prepare(compose(at_size).data, size, ["train", "val"], workers=args.workers, overwrite=False)
        loader = create_data(compose(at_size + [f"data.img_size={size}", "data.format=packed"])).loader("train")
        rates.append(images_per_s(loader, args.epochs))
        print(f"{size:>8} {rates[0]:>12.0f} {streams[0]:>10.0f} {streams[1]:>9.0f} {rates[1]:>13.0f} "
              f"{rates[1] / rates[0]:>6.1f}x {rates[2]:>18.0f} {rates[2] / rates[0]:>6.1f}x")


def write_wds(root: Path, base: list[str]) -> list[str]:
    """The MiniPlaces tree as shards (JPEG bytes copied), once; the overrides that read them."""
    from vitcli.data.prepare import prepare_shards

    out = root.parent / "wds"
    if not (out / "val.json").is_file():
        t = time.perf_counter()
        prepare_shards(compose(base).data, out, 1000, ["train", "val"], overwrite=False, show_progress=False)
        print(f"prepare format=wds (one-off): {time.perf_counter() - t:.1f} s")
    return ["data=wds", f"data.root={out}", f"data.cache_dir={root.parent / 'cache'}"]


def write_hf(root: Path, base: list[str]) -> list[str]:
    """The MiniPlaces tree as a save_to_disk Hugging Face dataset (image bytes + ClassLabel), once."""
    import datasets

    from vitcli.data.sources import load_file_source

    out = root.parent / "hf"
    if not (out / "dataset_dict.json").is_file():
        splits, names = load_file_source(compose(base).data)
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
        parts = {k: datasets.Dataset.from_dict(
            {"image": [{"bytes": Path(p).read_bytes(), "path": i} for p, i in zip(v.paths, v.ids)],
             "label": v.labels.tolist()}, features=features) for k, v in splits.items() if k in ("train", "val")}
        datasets.DatasetDict(parts).save_to_disk(str(out))
    return ["data=hf", f"data.dataset={out}", f"data.cache_dir={root.parent / 'cache'}"]


if __name__ == "__main__":
    main()
