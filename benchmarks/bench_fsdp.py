"""Per-rank memory and step time, DDP against FSDP, for ViT-B and ViT-L at 224 px, measured by `vitcli plan`.

    python benchmarks/bench_fsdp.py [--models vit_b,vit_l] [--devices 2] [--batch 2] [--device cpu]

For each model and strategy it runs `vitcli plan model=... trainer.strategy=... trainer.devices=N` on
synthetic 224 px images (AdamW, fp32 on the CPU; on a GPU pass --device cuda --precision bf16) and
reads plan.json: each rank's parameter, gradient and optimizer-state bytes (counted from the local
shards, not timed), the step's peak memory (CPU: the process's peak RSS, which includes torch itself;
GPU: max allocated) and the step time. It prints a table and the FSDP/DDP ratio per model; the goal is
parameters + gradients + optimizer state at about 1/N of DDP's on N ranks.

The GPU row: with a GPU lent, `--device cuda --devices 1` measures DDP only (FSDP needs two ranks);
name the card beside the figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

MODELS = {  # vitcli model option + overrides; vit_l has no option file of its own
    "vit_b": ["model=vit_b"],
    "vit_l": ["model=vit_b", "model.name=vit_l", "model.timm_name=vit_large_patch16_224"],
}
GIB = 1024 ** 3


def plan(model: str, strategy: str, args: argparse.Namespace, cwd: Path) -> dict:
    """Run `vitcli plan` for one case; its plan.json record."""
    out = cwd / f"{model}_{strategy}"
    cmd = [sys.executable, "-m", "vitcli", "plan", *MODELS[model], f"trainer.strategy={strategy}",
           f"trainer.devices={args.devices}", f"trainer.device={args.device}", f"trainer.precision={args.precision}",
           "data=synthetic", "data.img_size=224", "data.native_size=32", "data.num_samples=64",
           "data.val_fraction=0.25", f"data.batch_size={args.batch}", "data.num_workers=0",
           "plan.warmup=1", f"plan.steps={args.steps}", "plan.eval_batches=1", f"plan.out={out}"]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "disabled"})
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[2:])} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return json.loads((out / "plan.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="vit_b,vit_l")
    ap.add_argument("--devices", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2, help="per-rank batch")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32")
    args = ap.parse_args()
    strategies = ["ddp", "fsdp"] if args.devices > 1 else ["ddp"]
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, device={args.device}, {args.devices} ranks, "
          f"per-rank batch {args.batch}, {args.precision}, AdamW, 224 px")
    print(f"{'model':6} {'strategy':8} {'params M':>8} {'param GiB':>9} {'grad GiB':>8} {'optim GiB':>9} "
          f"{'p+g+o GiB':>9} {'peak GiB':>8} {'step s':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            rows = {}
            for strategy in strategies:
                rec = plan(model, strategy, args, Path(tmp))
                mem, thr = rec["memory"], rec["throughput"]
                state = mem["params_bytes"] + mem["grads_bytes"] + mem["optimizer_bytes"]
                rows[strategy] = (state, mem["peak_bytes"], thr["step_s"])
                print(f"{model:6} {strategy:8} {rec['run']['num_params'] / 1e6:8.1f} {mem['params_bytes'] / GIB:9.2f} "
                      f"{mem['grads_bytes'] / GIB:8.2f} {mem['optimizer_bytes'] / GIB:9.2f} {state / GIB:9.2f} "
                      f"{mem['peak_bytes'] / GIB:8.2f} {thr['step_s']:7.2f}", flush=True)
            if "fsdp" in rows:
                (sd, pd, td), (sf, pf, tf) = rows["ddp"], rows["fsdp"]
                print(f"{model:6} fsdp/ddp per rank: params+grads+optim {sf / sd:.2f}x, peak {pf / pd:.2f}x, "
                      f"step time {tf / td:.2f}x")


if __name__ == "__main__":
    main()
