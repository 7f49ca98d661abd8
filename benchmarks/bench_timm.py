"""vitcli train against timm's own train.py on the same digits image folder, end to end (issue 29).

Goal: vitcli's whole process takes at most 0.9x the time of timm's, at equal or better best val top-1.
Cost: about 4 min a round on a 2-core CPU (two 8-epoch ViT-Ti runs plus the bare loop twice).

    python benchmarks/bench_timm.py --timm-train /path/to/pytorch-image-models/train.py [--rounds 2] [--workers 2]
        [--precision bf16]   (both sides in bf16 autocast: timm --amp --amp-dtype bfloat16,
                              vitcli trainer.precision=bf16; the bare loop stays fp32)

timm's train.py is not in the timm wheel: take it from the pytorch-image-models repository at the
tag of the installed timm (or set VITCLI_TIMM_TRAIN). The script writes scikit-learn's digits with
vitcli's own split (data=digits: stratified 80/20, data.split_seed=0; 8x8 upscaled to 32 px the way
the digits loader does) as train/<class>/*.png and val/<class>/*.png, then runs, as real processes,
alternating for --rounds:

    python TIMM_TRAIN --data-dir DIR --train-split train --val-split val --num-classes 10
        --model vit_tiny_patch16_224 --model-kwargs img_size=32 patch_size=4 --img-size 32
        --crop-pct 1.0 --mean 0.5 0.5 0.5 --std 0.5 0.5 0.5 --interpolation bicubic
        --train-interpolation bicubic -b 64 --validation-batch-size 128 --epochs 8 --opt adamw
        --lr 1e-3 --weight-decay 0.03 --sched cosine --sched-on-updates --warmup-epochs 1
        --warmup-lr 1e-6 --min-lr 1e-6 --cooldown-epochs 0 --smoothing 0.1 --drop-path 0
        --scale 0.75 1.0 --ratio 0.85 1.18 --hflip 0 --color-jitter 0 --device cpu -j 2 --seed 42
        --log-interval 20 --output OUT --experiment timm
    python -m vitcli train data=imagefolder data.root=DIR data.img_size=32 data.batch_size=64
        data.num_workers=2 data.mean=[0.5,0.5,0.5] data.std=[0.5,0.5,0.5] model=vit_t
        model.patch_size=4 trainer.epochs=8 trainer.device=cpu trainer.progress=plain hydra.run.dir=run

Both: AdamW 1e-3, weight decay 0.03 (not on biases, norms, position embedding, class token),
per-step cosine with 1 warmup epoch from 1e-6 to a floor of 1e-6, label smoothing 0.1, random
resized crops 75-100% at aspect 0.85-1.18, bicubic, no flips, no pretrained weights, seed 42, the
same loader workers and torch's default threads. Each side is timed from launch to exit; vitcli's
summary.json `phases` says where its time went. The bare-loop img/s (benchmarks/bench_train.py's
loop over the same model and batch) is measured before and after, so a slow day shows as such.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import bare_epoch  # noqa: E402  (the bare loop bench_train and bench_e2e measure)

GOAL = 0.9  # vitcli's end-to-end time over timm's
IMG, BATCH = 32, 64
WHERE = ("timm's train.py is not in the timm wheel: get it from https://github.com/huggingface/pytorch-image-models "
         "at tag v{v} (train.py at the top) and pass --timm-train PATH or set VITCLI_TIMM_TRAIN")


def write_digits_folder(root: Path) -> tuple[int, int]:
    """vitcli's digits split as PNG files; returns (train, val) image counts."""
    from PIL import Image

    from vitcli.data.arrays import stratified_split
    from vitcli.data.sources.digits import load_digits_split

    full, class_names = load_digits_split()
    train_idx, val_idx = stratified_split(full.labels, 0.2, 0)  # data.val_fraction, data.split_seed defaults
    # the digits loader's own upscale: uint8 bilinear with antialias to img_size
    x = torch.from_numpy(full.images).permute(0, 3, 1, 2).contiguous()
    big = torch.nn.functional.interpolate(x, size=(IMG, IMG), mode="bilinear", antialias=True, align_corners=False)
    pixels = big.permute(0, 2, 3, 1).contiguous().numpy()
    for split, idx in (("train", train_idx), ("val", val_idx)):
        for c in class_names:
            (root / split / c).mkdir(parents=True, exist_ok=True)
        for i in idx:
            Image.fromarray(pixels[i]).save(root / split / class_names[full.labels[i]] / f"{i:05d}.png")
    return len(train_idx), len(val_idx)


def timm_command(train_py: Path, data: Path, out: Path, epochs: int, workers: int, device: str,
                 precision: str = "32") -> list[str]:
    amp = ["--amp", "--amp-dtype", "bfloat16"] if precision == "bf16" else []  # timm's autocast, as vitcli's
    return [sys.executable, str(train_py), "--data-dir", str(data), "--train-split", "train", "--val-split", "val",
            "--num-classes", "10", "--model", "vit_tiny_patch16_224", "--model-kwargs", f"img_size={IMG}",
            "patch_size=4", "--img-size", str(IMG), "--crop-pct", "1.0", "--mean", "0.5", "0.5", "0.5",
            "--std", "0.5", "0.5", "0.5", "--interpolation", "bicubic", "--train-interpolation", "bicubic",
            "-b", str(BATCH), "--validation-batch-size", str(2 * BATCH), "--epochs", str(epochs),
            "--opt", "adamw", "--lr", "1e-3", "--weight-decay", "0.03", "--sched", "cosine", "--sched-on-updates",
            "--warmup-epochs", "1", "--warmup-lr", "1e-6", "--min-lr", "1e-6", "--cooldown-epochs", "0",
            "--smoothing", "0.1", "--drop-path", "0", "--scale", "0.75", "1.0", "--ratio", "0.85", "1.18",
            "--hflip", "0", "--color-jitter", "0", "--device", device, "-j", str(workers), "--seed", "42",
            "--log-interval", "20", "--output", str(out), "--experiment", "timm", *amp]


def vitcli_command(data: Path, epochs: int, workers: int, device: str, precision: str = "32") -> list[str]:
    return [sys.executable, "-m", "vitcli", "train", "data=imagefolder", f"data.root={data}", f"data.img_size={IMG}",
            f"data.batch_size={BATCH}", f"data.num_workers={workers}", "data.mean=[0.5,0.5,0.5]",
            "data.std=[0.5,0.5,0.5]", "model=vit_t", "model.patch_size=4", f"trainer.epochs={epochs}",
            f"trainer.device={device}", f"trainer.precision={precision}", "trainer.progress=plain", "hydra.run.dir=run"]


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], cwd: Path, log: Path) -> tuple[float, float]:
    """Wall seconds from launch to exit of `cmd` and the CPU seconds it and its reaped children (loader
    workers) used: on a shared machine the CPU time moves less than the wall time. Output goes to `log`."""
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        start, cpu = time.perf_counter(), cpu_of_children()
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        seconds, cpu = time.perf_counter() - start, cpu_of_children() - cpu
    if proc.returncode != 0:
        sys.exit(f"{cmd[1]} {cmd[2]} failed ({proc.returncode}); its log, {log}, ends:\n{log.read_text()[-2000:]}")
    return seconds, cpu


def timm_result(out: Path) -> float:
    """Best eval top-1 (percent) from timm's summary.csv (one row per epoch)."""
    rows = list(csv.DictReader((out / "timm" / "summary.csv").open()))
    return max(float(r["eval_top1"]) for r in rows)


def timm_epoch_rates(log: Path) -> list[float]:
    """Images/s of each train epoch from the running mean batch time on timm's last line of the epoch
    ('Train: E [21/22 (100%)] ... Time: 7.0s, 9.1/s  (8.372s, 7.64/s)')."""
    rates = []
    for line in log.read_text().splitlines():
        if line.startswith("Train:") and "(100%)" in line and "Time:" in line:
            rates.append(float(line.split("Time:")[1].split("(")[1].split(",")[1].split("/s")[0]))
    return rates


def bare_rate(batches: int, device: str) -> float:
    """Images/s of the bare loop (forward, cross-entropy, backward, AdamW) on `batches` of vitcli's own
    digits batches for the same model: vit_t, patch 4, 32 px, batch 64 (a few batches: it is slow on CPU)."""
    import copy

    from hydra import compose, initialize_config_module

    import vitcli.core.config_store  # noqa: F401
    from vitcli.engine.trainer import Trainer

    overrides = ["trainer.progress=none", "model=vit_t", "model.patch_size=4", f"data.img_size={IMG}",
                 f"data.batch_size={BATCH}", f"trainer.device={device}"]
    with initialize_config_module(config_module="vitcli.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp))
        loader = trainer.parts.train_loader
        loader.set_epoch(0)
        data = [(x.to(device).clone(), y.to(device).clone()) for x, y in loader][:batches + 1]
        model = copy.deepcopy(trainer.parts.model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    bare_epoch(model, opt, data[:1])  # warm-up
    return sum(len(y) for _, y in data[1:]) / bare_epoch(model, opt, data[1:])


def report(r: int, side: str, result: tuple[float, float, float], extra: str) -> None:
    wall, cpu, top1 = result
    print(f"round {r}: {side:<6} {wall:6.1f} s ({cpu:.0f} CPU s), best val top-1 {top1:.2f}%, {extra}", flush=True)


def main() -> None:
    import timm

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timm-train", type=Path, default=os.environ.get("VITCLI_TIMM_TRAIN"),
                        help="timm's train.py (default: $VITCLI_TIMM_TRAIN)")
    parser.add_argument("--rounds", type=int, default=1, help="timm then vitcli, this many times (median time)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="data loader workers on both sides")
    parser.add_argument("--bare-batches", type=int, default=6, help="batches per bare-loop measurement")
    parser.add_argument("--device", default="cpu", help="cpu or cuda, on both sides")
    parser.add_argument("--precision", choices=("32", "bf16"), default="32",
                        help="both sides: 32, or bf16 autocast (timm: --amp --amp-dtype bfloat16)")
    parser.add_argument("--keep", type=Path, default=None, help="write the folder, runs and logs here and keep them")
    args = parser.parse_args()
    if args.timm_train is None or not Path(args.timm_train).is_file():
        print(WHERE.format(v=timm.__version__) + (f" ({args.timm_train} is not a file)" if args.timm_train else ""))
        sys.exit(2)

    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        data = work / "digits"
        n_train, n_val = write_digits_folder(data)
        print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} threads {torch.get_num_threads()}, "
              f"timm {timm.__version__}, precision {args.precision}; digits folder {n_train} train / {n_val} val PNGs "
              f"at {IMG} px in {data}")
        before = bare_rate(args.bare_batches, args.device)
        print(f"bare loop before: {before:7.1f} img/s (vit_t patch 4, {IMG} px, batch {BATCH})", flush=True)
        results: dict[str, list[tuple[float, float, float]]] = {"timm": [], "vitcli": []}  # wall, CPU, top-1
        summary: dict = {}
        for r in range(args.rounds):
            out = work / f"timm{r}"
            cmd = timm_command(Path(args.timm_train).resolve(), data, out, args.epochs, args.workers, args.device,
                               args.precision)
            if r == 0:
                print("timm  :", " ".join(cmd))
            wall, cpu = timed(cmd, work, work / f"timm{r}.log")
            results["timm"].append((wall, cpu, timm_result(out)))
            rates = ", ".join(f"{t:.1f}" for t in timm_epoch_rates(work / f"timm{r}.log"))
            report(r, "timm", results["timm"][-1], f"img/s in its epochs {rates}")
            (work / f"vitcli{r}").mkdir()
            cmd = vitcli_command(data, args.epochs, args.workers, args.device, args.precision)
            if r == 0:
                print("vitcli:", " ".join(cmd))
            wall, cpu = timed(cmd, work / f"vitcli{r}", work / f"vitcli{r}.log")
            summary = json.loads((work / f"vitcli{r}" / "run" / "summary.json").read_text())
            results["vitcli"].append((wall, cpu, float(summary["best"]["val_top1"])))
            report(r, "vitcli", results["vitcli"][-1],
                   f"run clock {summary['wall_s']:.1f} s, {summary['train_images_per_s']:.1f} img/s in its epochs")
        after = bare_rate(args.bare_batches, args.device)
        print(f"bare loop after : {after:7.1f} img/s")
        print(f"\nvitcli's phases (last round, of {summary['wall_s']:.1f} s in the run's clock):")
        for name, seconds in summary["phases"].items():
            print(f"  {name:<14} {seconds:7.1f} s")
        (t_timm, c_timm, a_timm), (t_vit, c_vit, a_vit) = (
            [statistics.median(col) for col in zip(*results[side])] for side in ("timm", "vitcli"))
        print(f"\nend to end (median of {args.rounds}): timm {t_timm:.1f} s, vitcli {t_vit:.1f} s; ratio vitcli/timm "
              f"{t_vit / t_timm:.3f} (goal <= {GOAL}): {'met' if t_vit <= GOAL * t_timm else 'NOT met'}")
        print(f"CPU seconds (median): timm {c_timm:.0f}, vitcli {c_vit:.0f}; ratio {c_vit / c_timm:.3f}")
        verdict = "equal or better" if a_vit >= a_timm else "WORSE"
        print(f"best val top-1 (median): timm {a_timm:.2f}%, vitcli {a_vit:.2f}%: {verdict} "
              f"(one of {n_val} val images: {100 / n_val:.2f} points)")


if __name__ == "__main__":
    main()
