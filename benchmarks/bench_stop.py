"""Seconds from a stop signal to a saved checkpoints/last.pt when the signal lands during the
epoch-end evaluation (SLURM's preemption SIGTERM or time-limit warning gives a fixed delay).

    python benchmarks/bench_stop.py [--val 2048] [--img-size 32] [--model vit_t]

Trains one epoch of a synthetic set with EMA on the CPU, then, in one sitting:

- waited:  the evaluation a stop used to wait for: raw and EMA weights over the whole val split
           (timed on the finished run; best.pt, curves and stoppers come on top of it)
- now:     SIGTERM sent to this process at the second batch of the raw-weight evaluation; the
           time until last.pt is on disk (the evaluation ends at the next batch)
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
from pathlib import Path


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    import vitcli.core.config_store  # noqa: F401

    with initialize_config_module(config_module="vitcli.conf", version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--val", type=int, default=2048, help="validation samples")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--model", default="vit_t")
    args = parser.parse_args()

    import vitcli.engine.trainer as trainer_module
    from vitcli.engine.evaluate import evaluate
    from vitcli.launch.interrupts import TrainingInterrupted

    train = 256
    overrides = [f"model={args.model}", "data=synthetic", f"data.num_samples={train + args.val}",
                 f"data.val_fraction={args.val / (train + args.val)}", f"data.img_size={args.img_size}",
                 f"data.native_size={args.img_size}", "data.batch_size=32", "trainer.epochs=2", "trainer.ema=true",
                 "trainer.device=cpu", "trainer.progress=none"]
    with tempfile.TemporaryDirectory() as tmp:
        # the evaluation a stop used to wait for, timed on a finished epoch
        trainer = trainer_module.Trainer(compose([*overrides, "trainer.epochs=1"]), Path(tmp) / "timed")
        trainer.fit()
        p = trainer.parts
        start = time.perf_counter()
        evaluate(p.model, p.val_loader, trainer.runtime)
        evaluate(p.ema.module, p.val_loader, trainer.runtime)
        waited = time.perf_counter() - start

        sent: list[float] = []

        def signalling(model, loader, runtime, **kwargs):
            def batches():
                for i, batch in enumerate(loader):
                    if i == 1 and not sent:
                        sent.append(time.time())
                        os.kill(os.getpid(), signal.SIGTERM)
                    yield batch
            return evaluate(model, batches(), runtime, **kwargs)

        trainer_module.evaluate = signalling
        run_dir = Path(tmp) / "stopped"
        stopped = trainer_module.Trainer(compose(overrides), run_dir)
        try:
            stopped.fit()
        except TrainingInterrupted as err:
            print(f"stopped: {err}")
        saved = (run_dir / "checkpoints" / "last.pt").stat().st_mtime - sent[0]
    batches = len(p.val_loader)
    print(f"val split: {args.val} samples in {batches} batches, {args.model} at {args.img_size} px, "
          f"{os.cpu_count()} CPUs")
    print(f"waited: evaluation of raw + EMA weights  {waited:7.2f} s")
    print(f"now:    signal -> last.pt on disk        {saved:7.2f} s   ({waited / max(saved, 1e-9):.1f}x sooner)")


if __name__ == "__main__":
    main()
