"""Full fine-tuning vs LoRA vs a frozen backbone with a trained head, side by side.

ViT-S/16 (timm vit_small_patch16_224, random init) at 224 px, batch 32, AdamW: trainable
parameters, peak memory and the time of one training step (forward, backward, optimizer).
Each mode runs in its own child process so that its peak memory is its own: on the CPU the
peak RSS reached during the timed steps above the RSS after the model and optimizer were built
(so peft's own imports do not count), on a GPU torch.cuda.max_memory_allocated. Beside it, two
exact figures: the activations autograd saves for backward in one forward pass, and the fp32
gradients + AdamW moments of the trainable parameters. The table prints at the end.

    python benchmarks/bench_peft.py                     # CPU, 3 timed steps per mode
    python benchmarks/bench_peft.py --device cuda --steps 20
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from types import SimpleNamespace

MODES = ("full", "lora", "frozen")


def _rss_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in MiB."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def saved_for_backward_mib(model, x) -> float:
    """MiB of the tensors autograd keeps for backward in one forward pass (activations, not weights)."""
    import torch

    saved: dict[int, int] = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).float().sum()
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in saved.items() if ptr not in weights) / 2**20


def child(mode: str, args: argparse.Namespace) -> dict:
    import timm
    import torch

    from vitcli.models.lora import apply_lora, count, trainable_params

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = timm.create_model("vit_small_patch16_224", num_classes=args.classes)
    if mode == "lora":
        model = apply_lora(model, SimpleNamespace(r=args.rank, alpha=2 * args.rank, dropout=0.0, targets=None),
                           "vit_s", ["head"])
    elif mode == "frozen":
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("head."))
    model.to(device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, device=device)
    y = torch.randint(0, args.classes, (args.batch,), device=device)
    activations = saved_for_backward_mib(model, x)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base_mib = _rss_mib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM (the peak RSS) to the current RSS
        f.write("5")

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _rss_mib("VmHWM") - base_mib)
    return {"mode": mode, "params": count(model), "trainable": trainable_params(model),
            "peak_mib": peak, "activations_mib": activations,
            "optimizer_mib": trainable_params(model) * 3 * 4 / 2**20,  # fp32 grads + AdamW's two moments
            "step_s": sorted(times)[len(times) // 2]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--child", choices=MODES)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args)))
        return
    rows = []
    for mode in MODES:
        out = subprocess.run([sys.executable, __file__, "--child", mode, *sys.argv[1:]], capture_output=True,
                             text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  {mode}: done", file=sys.stderr)
    memory = "peak GPU memory" if args.device.startswith("cuda") else "peak RSS growth in the steps"
    print(f"vit_small_patch16_224 {args.img_size}px batch {args.batch} on {args.device}, median of {args.steps} steps")
    print(f"| mode | trainable params | of | saved activations (MiB) | grads + AdamW state (MiB) | {memory} (MiB) "
          "| step (s) | step vs full |")
    print("|---|---|---|---|---|---|---|---|")
    full = rows[0]
    for r in rows:
        name = {"full": "full fine-tuning", "lora": f"LoRA r={args.rank}", "frozen": "frozen backbone + head"}[r["mode"]]
        print(f"| {name} | {r['trainable']:,} ({100 * r['trainable'] / full['params']:.2f}%) | {r['params']:,} | "
              f"{r['activations_mib']:,.0f} | {r['optimizer_mib']:,.0f} | {r['peak_mib']:,.0f} | {r['step_s']:.2f} | {r['step_s'] / full['step_s']:.2f}x |")


if __name__ == "__main__":
    main()
