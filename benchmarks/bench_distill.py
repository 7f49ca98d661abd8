"""Student alone vs student distilled from a stronger teacher, on the bundled digits.

    python benchmarks/bench_distill.py [--epochs 8] [--teacher-epochs 8] [--img-size 16] [--targets soft hard]

1. trains the teacher (resnet18 by default) on digits;
2. trains the student (vit_pico, 4 px patches) on digits with distill=none;
3. trains the same student, same epochs, seed, data split and augmentation, with
   distill=<target> and distill.teacher=<the teacher's run dir>, for each target;
and prints best val top-1 of each side by side, plus the teacher's share of the
distilled step time (teacher ms per step, as the trainer logs it).
All runs are real `Trainer` runs (the same code path as `vitcli train`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    import vitcli.core.config_store  # noqa: F401

    with initialize_config_module(config_module="vitcli.conf", version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def train(run_dir: Path, overrides: list[str]) -> dict:
    from vitcli.engine.trainer import Trainer

    t0 = time.perf_counter()
    summary = Trainer(compose(overrides), run_dir).fit()
    summary["bench_wall_s"] = time.perf_counter() - t0
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8, help="student epochs (both students)")
    ap.add_argument("--teacher-epochs", type=int, default=8)
    ap.add_argument("--teacher", default="resnet18", help="teacher model preset")
    ap.add_argument("--student", default="vit_pico", help="student model preset")
    ap.add_argument("--img-size", type=int, default=16)
    ap.add_argument("--targets", nargs="+", default=["soft", "hard"], choices=["soft", "hard"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscription on a shared CPU)")
    ap.add_argument("--out", default=None, help="keep the runs here (default: a temporary directory)")
    args = ap.parse_args()

    common = ["data=digits", f"data.img_size={args.img_size}", "augmentation=basic", "augmentation.hflip=0",
              f"trainer.seed={args.seed}", f"trainer.threads={args.threads}", "trainer.progress=none"]
    student = [f"model={args.student}", "model.patch_size=4", f"trainer.epochs={args.epochs}", *common]
    root = Path(args.out or tempfile.mkdtemp(prefix="bench_distill_"))
    print(f"runs under {root}", flush=True)

    teacher_dir = root / "teacher"
    results = [("teacher", args.teacher, args.teacher_epochs,
                train(teacher_dir, [f"model={args.teacher}", f"trainer.epochs={args.teacher_epochs}", *common]))]
    results.append(("student alone", args.student, args.epochs, train(root / "alone", student)))
    for target in args.targets:
        summary = train(root / f"distill_{target}", [*student, f"distill={target}", f"distill.teacher={teacher_dir}"])
        results.append((f"student + distill={target}", args.student, args.epochs, summary))

    print(f"\ndigits at {args.img_size}px, seed {args.seed}, augmentation=basic (hflip 0), threads {args.threads}")
    print(f"{'run':<28}{'model':<12}{'epochs':>7}{'best top1':>11}{'final top1':>12}{'wall s':>9}{'teacher ms/step':>17}")
    for label, model, epochs, s in results:
        teacher_ms = s["final"].get("teacher_ms_per_step")
        print(f"{label:<28}{model:<12}{epochs:>7}{s['best']['val_top1']:>11.2f}{s['final']['val_top1']:>12.2f}"
              f"{s['bench_wall_s']:>9.0f}{'' if teacher_ms is None else f'{teacher_ms:.1f}':>17}")
    alone = results[1][3]["best"]["val_top1"]
    for label, _, _, s in results[2:]:
        print(f"{label}: {s['best']['val_top1'] - alone:+.2f} points top-1 vs the student alone")


if __name__ == "__main__":
    main()
