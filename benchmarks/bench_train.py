"""vitcli's train loop vs a bare PyTorch loop: same model, batch size and data.

    python benchmarks/bench_train.py [--model vit_pico] [--img-size 32] [--batch 64] [--rounds 3]
                                     [--augmentation none]

Both run in this process, alternating, on the same synthetic images. The bare
loop is forward, cross-entropy, backward, AdamW step over pre-made tensors; the
vitcli side is Trainer.train_one_epoch (its loader, scheduler, progress and
logging included). Prints images/s of each and vitcli's overhead in percent.
With --augmentation PRESET the vitcli side also augments every batch (the bare
loop reuses one augmented epoch), so the overhead includes the batched augmentation.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch


def build_trainer(args, run_dir):
    from hydra import compose, initialize_config_module

    import vitcli.core.config_store  # noqa: F401
    from vitcli.engine.trainer import Trainer

    overrides = [f"model={args.model}", "data=synthetic", f"data.num_samples={args.samples}",
                 f"data.img_size={args.img_size}", f"data.native_size={args.img_size}", f"data.batch_size={args.batch}",
                 "data.val_fraction=0.05", "regularization=none", f"augmentation={args.augmentation}",
                 "trainer.progress=plain", "trainer.log_interval=50",
                 f"trainer.device={args.device}", f"trainer.epochs={args.rounds + 1}"]
    with initialize_config_module(config_module="vitcli.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    return Trainer(cfg, run_dir)


def bare_epoch(model, opt, batches) -> float:
    model.train()
    t0 = time.perf_counter()
    for x, y in batches:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_pico")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--samples", type=int, default=1400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--augmentation", default="none", help="preset run on the vitcli side (none: the loop alone)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(args, tmp)
        trainer.run_dir.mkdir(parents=True, exist_ok=True)
        loader = trainer.parts.train_loader
        loader.set_epoch(0)
        batches = [(x.clone(), y.clone()) for x, y in loader]
        images = sum(len(y) for _, y in batches)
        bare_model = copy.deepcopy(trainer.parts.model)
        bare_opt = torch.optim.AdamW(bare_model.parameters(), lr=1e-3, weight_decay=0.0)
        bare_epoch(bare_model, bare_opt, batches[:2])  # warm-up both sides
        trainer.train_one_epoch(0)
        trainer.state.batch_in_epoch = 0  # what Trainer.run_epoch does between epochs
        vit_times, bare_times = [], []
        for r in range(1, args.rounds + 1):
            t0 = time.perf_counter()
            trainer.train_one_epoch(r)
            vit_times.append(time.perf_counter() - t0)
            trainer.state.batch_in_epoch = 0
            bare_times.append(bare_epoch(bare_model, bare_opt, batches))
        vit, bare = statistics.median(vit_times), statistics.median(bare_times)
        print(f"model={args.model} img_size={args.img_size} batch={args.batch} images/epoch={images} "
              f"device={trainer.runtime.device} threads={torch.get_num_threads()} rounds={args.rounds} "
              f"augmentation={args.augmentation}")
        print(f"bare PyTorch loop : {images / bare:8.1f} img/s  ({bare:.2f} s/epoch, median)")
        print(f"vitcli train loop : {images / vit:8.1f} img/s  ({vit:.2f} s/epoch, median)")
        print(f"ratio vitcli/bare time = {vit / bare:.3f}  -> overhead {100 * (vit / bare - 1):+.1f}%")


if __name__ == "__main__":
    main()
