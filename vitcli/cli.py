"""`vitcli <command> [hydra overrides]`: dispatch to one Hydra app per command.

Kept free of torch/timm/hydra imports so that `vitcli --help` stays instant.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module under vitcli.commands, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a model (distils when distill=... is set; -m for sweeps)"),
    "eval": ("evaluate", "metrics of a trained run on a split: vitcli eval run=DIR"),
    "predict": ("predict", "logits for a split -> predictions/<split>.npz (+ MiniPlaces submissions)"),
    "explain": ("explain", "attention rollout / Grad-CAM grid of a run's images: vitcli explain run=DIR"),
    "preview": ("preview", "one training batch as the model sees it -> runs/previews/<stamp>/plots/preview.png"),
    "ensemble": ("ensemble", "vote / weighted vote / mean prob / greedy over runs' predictions"),
    "prepare": ("prepare", "pack a dataset into uint8 arrays for the fast path (then data.format=packed)"),
    "models": ("models", "model presets and the timm names behind them"),
    "runs": ("runs", "table of runs under runs/ with their best metrics: vitcli runs [sort=val_top1]"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: vitcli <command> [hydra overrides ...]",
        "",
        "commands:",
        *(f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items()),
        "",
        "Each command is a Hydra app: `vitcli <command> --help` shows its config groups,",
        "`--cfg job` prints the composed config, `-m` runs a sweep.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0 if argv else 2)
    if argv[0] in ("-V", "--version"):
        from vitcli import __version__

        print(f"vitcli {__version__}")
        return
    command = argv[0]
    if command not in COMMANDS:
        print(
            f"vitcli: unknown command '{command}'. Choose one of: {', '.join(COMMANDS)} "
            "(vitcli --help lists them).",
            file=sys.stderr,
        )
        sys.exit(2)
    module = importlib.import_module(f"vitcli.commands.{COMMANDS[command][0]}")
    # Hydra parses sys.argv itself; show the command in its usage lines.
    sys.argv = [f"vitcli {command}", *argv[1:]]
    module.main()
