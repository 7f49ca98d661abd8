"""vitcli's training throughput on a GPU against the bare-loop ceiling, in one table.

    python benchmarks/bench_gpu.py            # one GPU, 224 px, bf16 (a few minutes on an H100)
    python benchmarks/bench_gpu.py --smoke    # the same code on CPU: tiny model, few steps (a test runs it)
    python benchmarks/bench_gpu.py --rows vit_s vit_b

Per row (model, batch), in this process, side by side:
- ceiling: a bare PyTorch loop (forward, cross-entropy, backward, AdamW step) under the
  same precision on batches already on the device: what the model alone can do;
- packed: the real vitcli Trainer on a packed dataset (128 px uint8 arrays, resized to
  224 and augmented with augmentation=leaderboard as whole batches on the device);
- files: the real Trainer on 128 px JPEG files (decoded and augmented per sample in
  data.num_workers=auto workers, resized to 224);
with each one's ratio to the ceiling, the peak GPU memory of the packed run, and the host
syncs per step of the packed run (torch.cuda.set_sync_debug_mode warnings). The data is
generated into a temp dir. Without hydra-core/omegaconf installed (a bare GPU image), see
benchmarks/gpu_wheels.sh and benchmarks/gpu_session.sh.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def use_checkout() -> None:
    """Run from a bare checkout too (no `pip install -e .`): import vitcli from this tree and
    map its conf/ to `vitcli.conf`, as pyproject's package-dir does for an install."""
    import importlib
    import importlib.util

    if importlib.util.find_spec("vitcli") is None:
        sys.path.insert(0, str(ROOT))
    if importlib.util.find_spec("vitcli.conf") is None:
        sys.path.insert(0, str(ROOT))
        conf = sys.modules["vitcli.conf"] = importlib.import_module("conf")
        importlib.import_module("vitcli").conf = conf


@dataclass
class Row:
    label: str
    preset: str  # vitcli model preset
    batch: int
    compile: bool = False


GPU_ROWS = [Row("vit_small b256", "vit_s", 256), Row("vit_base b128", "vit_b", 128),
            Row("swin_tiny b128", "swin_t", 128), Row("vit_small b256 compile", "vit_s", 256, compile=True)]
SMOKE_ROWS = [Row("vit_pico b8", "vit_pico", 8)]


@dataclass
class Setup:
    device: str
    precision: str  # trainer.precision
    img_size: int  # training size
    jpeg_size: int  # stored size of the files / pack
    steps: int  # measured steps per epoch at the largest batch
    extra: tuple = ()  # overrides for every row


GPU = Setup("cuda", "bf16", 224, 128, 16)
SMOKE = Setup("cpu", "32", 32, 16, 3, ("model.patch_size=8", "++model.kwargs.depth=2", "++model.kwargs.embed_dim=32",
                                      "++model.kwargs.num_heads=2", "trainer.threads=2"))


def make_images(root: Path, count: int, size: int, classes: int = 10) -> None:
    """An imagefolder tree of smooth random JPEGs (train: `count`, val: one per class)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", count), ("val", classes)):
        for i in range(n):
            small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            path = root / split / f"c{i % classes}" / f"{i:05d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(small).resize((size, size), Image.BILINEAR).save(path, quality=90)


def compose_cfg(row: Row, setup: Setup, root: Path, data_format: str):
    from hydra import compose, initialize_config_module

    import vitcli.core.config_store  # noqa: F401

    overrides = [f"model={row.preset}", "data=imagefolder", f"data.root={root}", f"data.format={data_format}",
                 f"data.img_size={setup.img_size}", f"data.batch_size={row.batch}", "data.num_workers=auto",
                 "augmentation=leaderboard", f"trainer.precision={setup.precision}", f"trainer.device={setup.device}",
                 f"trainer.compile={str(row.compile).lower()}", "trainer.progress=none", "trainer.epochs=4",
                 "trainer.export_safetensors=false", *setup.extra]
    with initialize_config_module(config_module="vitcli.conf", version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ceiling(cfg, device: torch.device, batch: int, steps: int) -> float:
    """Images/s of forward + loss + backward + AdamW on device-resident batches."""
    from vitcli.models.factory import create_model

    model = create_model(cfg.model, 10, cfg.regularization).to(device).train()
    step_model = torch.compile(model) if cfg.trainer.compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    xs = torch.randn(4, batch, 3, cfg.data.img_size, cfg.data.img_size, device=device)
    ys = torch.randint(0, 10, (4, batch), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(str(cfg.trainer.precision))

    def step(i: int) -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(step_model(xs[i % 4]), ys[i % 4])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(3):  # warm-up (and compilation)
        step(i)
    sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    sync(device)
    return batch * steps / (time.perf_counter() - t0)


def train_epoch(trainer, epoch: int) -> tuple[float, int]:
    """(seconds, images) of one Trainer epoch, reset as Trainer.run_epoch leaves it."""
    sync(trainer.runtime.device)
    t0 = time.perf_counter()
    stats = trainer.train_one_epoch(epoch)
    sync(trainer.runtime.device)
    seconds = time.perf_counter() - t0
    trainer.state.batch_in_epoch = 0  # the loss window resets itself at epoch end
    return seconds, round(stats["images_per_s"] * stats["epoch_time_s"])


def count_syncs(trainer, epoch: int) -> float | None:
    """Host syncs per step during one epoch (CUDA only: set_sync_debug_mode warnings)."""
    if trainer.runtime.device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            train_epoch(trainer, epoch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    return syncs / max(len(trainer.parts.train_loader), 1)


def vitcli_run(row: Row, setup: Setup, root: Path, data_format: str, run_dir: Path) -> dict:
    """Images/s of the real Trainer (epoch 0 warms up: workers, compilation, allocator)."""
    from vitcli.engine.trainer import Trainer

    trainer = Trainer(compose_cfg(row, setup, root, data_format), run_dir)
    trainer.run_dir.mkdir(parents=True, exist_ok=True)
    if trainer.runtime.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainer.runtime.device)
    train_epoch(trainer, 0)
    seconds, images = train_epoch(trainer, 1)
    out = {"ips": images / seconds, "syncs": count_syncs(trainer, 2), "peak_gib": None}
    if trainer.runtime.device.type == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated(trainer.runtime.device) / 2**30
    del trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def pack(root: Path, size: int) -> None:
    from hydra import compose, initialize_config_module

    import vitcli.core.config_store  # noqa: F401
    from vitcli.data.prepare import prepare

    with initialize_config_module(config_module="vitcli.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["data=imagefolder", f"data.root={root}"])
    prepare(cfg.data, size, None, workers=4, overwrite=True)


def fmt(value, spec: str) -> str:
    width = int(spec.split(".")[0])
    return f"{'-':>{width}}" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny model, few steps (what the test runs)")
    parser.add_argument("--rows", nargs="*", help="only rows whose label starts with one of these")
    args = parser.parse_args()
    use_checkout()
    from vitcli.data.files import resolve_num_workers
    setup, rows = (SMOKE, SMOKE_ROWS) if args.smoke else (GPU, GPU_ROWS)
    if args.rows:
        rows = [r for r in rows if any(r.label.startswith(p) or r.preset == p for p in args.rows)]
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("bench_gpu.py: no CUDA GPU visible; run with --smoke on CPU")
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        make_images(root, setup.steps * max(r.batch for r in rows), setup.jpeg_size)
        pack(root, setup.jpeg_size)
        name = torch.cuda.get_device_name(0) if setup.device == "cuda" else "cpu"
        print(f"device={name} precision={setup.precision} img_size={setup.img_size} jpeg/pack size={setup.jpeg_size} "
              f"num_workers(auto)={resolve_num_workers('auto')} torch={torch.__version__}")
        head = f"{'model':<24} {'ceiling img/s':>13} {'packed img/s':>12} {'ratio':>6} {'files img/s':>11} " \
               f"{'ratio':>6} {'peak GiB':>8} {'syncs/step':>10}"
        print(head)
        print("-" * len(head), flush=True)
        results = []
        for row in rows:
            cfg = compose_cfg(row, setup, root, "packed")
            device = torch.device(f"{setup.device}:0" if setup.device == "cuda" else setup.device)
            steps = len(list((root / "train").rglob("*.jpg"))) // row.batch
            top = ceiling(cfg, device, row.batch, steps)
            packed = vitcli_run(row, setup, root, "packed", Path(tmp) / f"run_{len(results)}_p")
            files = vitcli_run(row, setup, root, "files", Path(tmp) / f"run_{len(results)}_f")
            results.append(row)  # each row as it ends: a run cut short keeps the rows it finished
            print(f"{row.label:<24} {top:13.1f} {packed['ips']:12.1f} {packed['ips'] / top:6.2f} {files['ips']:11.1f} "
                  f"{files['ips'] / top:6.2f} {fmt(packed['peak_gib'], '8.2f')} {fmt(packed['syncs'], '10.1f')}",
                  flush=True)
    print(f"total {time.perf_counter() - t_start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
