"""`vitcli <command> [hydra overrides]`: dispatch to one Hydra app per command.

Kept free of torch/timm/hydra imports so that `vitcli --help` stays instant; `vitcli <command> --help`
is answered from core/reference.py (the schemas and conf/ files, read as they are) without composing.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import os
import sys
from pathlib import Path

from vitcli.core import phases  # first: its import is the process's earliest time mark (a run's startup phase)
from vitcli.core.command_list import COMMANDS  # command -> (module under vitcli.commands, summary)
from vitcli.core import malloc_tuning, startup_gc

COMPLETION_FLAGS = ("-sc", "--shell-completion")
# the keys whose run a command's own run dir is derived from (conf/train.yaml, conf/probe.yaml): resolved
# here, before Hydra makes that dir, so `resume=latest` names the real run and a typo creates nothing
RUN_DIR_KEYS = {"train": "resume", "probe": "run"}
HELP_FLAGS = ("-h", "--help")
# Last at exit (atexit runs in reverse): move every object to the permanent generation, so the
# interpreter's final collection skips what torch, timm and their imports leave (about 1.7 s of every
# command on 2 cores). atexit handlers, thread joins and file closes still run; nothing is left unwritten.
atexit.register(gc.freeze)


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: vitcli <command> [hydra overrides ...]",
        "",
        "commands:",
        *(f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items()),
        "",
        "`vitcli <command> --help` lists its config groups and keys (type, default, what each does) and examples.",
        "Each command is a Hydra app: key=value and group=option override, `--cfg job` prints the composed",
        "config, `-m` runs a sweep. run= takes a run dir, latest, an experiment name (its newest run) or a prefix.",
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


def command_help(command: str, args: list[str]) -> str:
    """`vitcli <command> [group=option ...] --help`: the reference of the command, with the defaults of
    the options named on the line."""
    from vitcli.core.reference import format_help

    choices = {}
    for arg in args:
        key, eq, value = arg.partition("=")
        if eq and key.isidentifier() and "," not in value:  # model=swin_t (not model.x=1, not a -m list)
            choices[key] = value
    try:
        return format_help(command, choices)
    except KeyError as err:
        print(f"vitcli: error: {err.args[0]}", file=sys.stderr)
        sys.exit(2)


def resolve_run_dir_key(command: str, args: list[str]) -> list[str]:
    """`vitcli train resume=latest` -> `resume='<its run dir>'` (run=, as core/run_paths.py resolve_run takes it)."""
    key = RUN_DIR_KEYS.get(command)
    typed = [a.split("=", 1)[1] for a in args if key and a.startswith(f"{key}=")]
    if len(typed) != 1 or typed[0] in ("", "null", "None") or "," in typed[0]:
        return args
    from vitcli.core.errors import report_user_errors
    from vitcli.core.run_paths import display_path, resolve_run
    from vitcli.core.runs import CONFIG

    if (Path(typed[0]).expanduser() / CONFIG).is_file():
        return args
    root = next((a.split("=", 1)[1] for a in args if a.startswith("runs_root=")), "runs")
    run = report_user_errors(resolve_run)(typed[0], root, key)
    print(f"{key}={typed[0]}: {display_path(run)}")
    quoted = str(run).replace("\\", "\\\\").replace("'", "\\'")
    return [f"{key}='{quoted}'" if a.startswith(f"{key}=") else a for a in args]


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
    if len(argv) > 1 and argv[0] == "help" and argv[1] in COMMANDS:  # vitcli help train
        argv = [argv[1], "--help"]
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
    if any(a in HELP_FLAGS for a in argv[1:]) and "--hydra-help" not in argv:
        print(command_help(command, argv[1:]))
        return
    if command == "train":
        phases.begin()  # the run's clock: startup lasts until its first step
        startup_gc.pause()  # until the run is built (engine/trainer.py): imports without collector passes
    if command in ("train", "plan"):
        malloc_tuning.tune()  # the step's buffers stay with the process (plan measures the same step)
    if command == "train" and "SLURM_JOB_ID" in os.environ:
        hold_slurm_warning()
    argv = [command, *resolve_run_dir_key(command, argv[1:])]
    module = importlib.import_module(f"vitcli.commands.{COMMANDS[command][0]}")
    # Hydra parses sys.argv itself; show the command in its usage lines. Completion
    # scripts take their program name from argv[0]: register them for `vitcli` itself.
    completing = any(a in COMPLETION_FLAGS for a in argv[1:])
    sys.argv = ["vitcli" if completing else f"vitcli {command}", *argv[1:]]
    try:
        module.main()
    finally:  # a command that stopped before its run was built turns the collector back on too (in-process callers)
        startup_gc.resume()
