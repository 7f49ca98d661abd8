"""`vitcli <command> [hydra overrides]`: dispatch to one Hydra app per command.

Kept free of torch/timm/hydra imports so that `vitcli --help` stays instant.
"""

from __future__ import annotations

import importlib
import os
import sys

# command -> (module under vitcli.commands, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a model (distils when distill=... is set; -m for sweeps)"),
    "eval": ("evaluate", "metrics of a trained run on a split: vitcli eval run=DIR"),
    "predict": ("predict", "logits for a split -> predictions/<split>.npz; images=PATH: top-k CSV of your own images"),
    "explain": ("explain", "attention rollout / Grad-CAM grid of a run's images: vitcli explain run=DIR"),
    "preview": ("preview", "one training batch as the model sees it -> runs/previews/<stamp>/plots/preview.png"),
    "ensemble": ("ensemble", "vote / weighted vote / mean prob / greedy over runs' predictions"),
    "prepare": ("prepare", "pack a dataset into uint8 arrays for the fast path (then data.format=packed)"),
    "models": ("models", "model presets and the timm names behind them"),
    "runs": ("runs", "table of runs under runs/ with their best metrics: vitcli runs [sort=val_top1]"),
    "plan": ("plan", "measure a few real steps: img/s, memory, data- or compute-bound, ETA -> runs/plans/<stamp>/plan.json"),
    "probe": ("probe", "frozen features scored by k-NN / linear / few-shot probes: vitcli probe run=DIR"),
    "export": ("export", "a run's model as a timm folder (config.json + safetensors) or ONNX: vitcli export run=DIR"),
}

COMPLETION_FLAGS = ("-sc", "--shell-completion")


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
        'Tab completion: eval "$(vitcli train -sc install=bash)" (or zsh, fish).',
    ]
    return "\n".join(lines)


def complete(argv: list[str]) -> None:
    """`vitcli -sc query=SHELL`, run by the script `vitcli <command> -sc install=SHELL` prints.

    The shell passes the whole line in COMP_LINE. While the command word is being
    typed, list the matching commands; after it, hand the line without the command
    word to that command's Hydra app, which completes config groups and keys.
    """
    line = os.environ.get("COMP_LINE", "")
    words = line.split()
    typing_command = len(words) < 2 or (len(words) == 2 and not line.endswith(" "))
    if typing_command:
        prefix = words[1] if len(words) == 2 else ""
        print(" ".join(name for name in COMMANDS if name.startswith(prefix)))
        return
    command = words[1]
    if command not in COMMANDS or not any(a.startswith("query=") for a in argv[1:]):
        return
    start = line.index(command)
    rest = line[start + len(command):].lstrip()
    os.environ["COMP_LINE"] = f"{words[0]} {rest}"
    point = int(os.environ.get("COMP_POINT") or len(line))
    os.environ["COMP_POINT"] = str(max(0, point - (len(line) - len(os.environ["COMP_LINE"]))))
    module = importlib.import_module(f"vitcli.commands.{COMMANDS[command][0]}")
    sys.argv = ["vitcli", *argv]
    module.main()


def hold_slurm_warning() -> None:
    """SLURM's time-limit warning (SIGUSR2) may come while torch is still importing, and would end
    the process: from here on it only raises vitcli's stop flag (launch/interrupts.py, torch-free)."""
    import signal

    from vitcli.launch import interrupts

    interrupts.take((signal.SIGUSR2,))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMPLETION_FLAGS:
        complete(argv)
        return
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
    if command == "train" and "SLURM_JOB_ID" in os.environ:
        hold_slurm_warning()
    module = importlib.import_module(f"vitcli.commands.{COMMANDS[command][0]}")
    # Hydra parses sys.argv itself; show the command in its usage lines. Completion
    # scripts take their program name from argv[0]: register them for `vitcli` itself.
    completing = any(a in COMPLETION_FLAGS for a in argv[1:])
    sys.argv = ["vitcli" if completing else f"vitcli {command}", *argv[1:]]
    module.main()
