"""The run directory contract: where a run keeps what, and loading it back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vitcli.errors import UserError

CONFIG = "config.yaml"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"


def checkpoint_path(run_dir: Path, which: str) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"{which}.pt"


def require_run_dir(run: str | Path, setting: str = "run") -> Path:
    """A run dir that exists and holds config.yaml, else a UserError saying what to pass."""
    run_dir = Path(run).expanduser()
    if not run_dir.is_dir():
        raise UserError(f"{setting}={run}: no such directory (pass a run directory such as runs/default/<timestamp>; `vitcli runs` lists them)")
    if not (run_dir / CONFIG).is_file():
        raise UserError(f"{setting}={run}: no {CONFIG} there, so it is not a vitcli run directory")
    return run_dir


def load_run_config(run_dir: Path):
    """The run's resolved config, typed by the train schema (so old runs get new defaults)."""
    from omegaconf import OmegaConf

    from vitcli.config import TrainConfig

    saved = OmegaConf.load(Path(run_dir) / CONFIG)
    schema = OmegaConf.structured(TrainConfig)
    try:
        cfg = OmegaConf.merge(schema, saved)
    except Exception as err:  # omegaconf's validation errors
        raise UserError(f"{Path(run_dir) / CONFIG} does not match the train schema: {str(err).splitlines()[0]}") from err
    return cfg


def require_checkpoint(run_dir: Path, which: str) -> Path:
    if which not in ("best", "last"):
        raise UserError(f"checkpoint={which} is not one of best, last")
    path = checkpoint_path(run_dir, which)
    if not path.is_file():
        raise UserError(
            f"{run_dir} has no checkpoints/{which}.pt (the run may have failed before its first epoch ended; "
            "check its train.log, or try checkpoint=last)"
        )
    return path


def read_summary(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / SUMMARY
    return json.loads(path.read_text()) if path.is_file() else {}


def resume_config(cfg: Any, overrides: list[str]):
    """`vitcli train resume=DIR [dotted overrides]`: the run's own config, with the
    command line's dotted overrides (e.g. trainer.epochs=30) applied on top."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    run_dir = require_run_dir(cfg.resume, "resume")
    if not checkpoint_path(run_dir, "last").is_file():
        raise UserError(f"resume={cfg.resume}: no checkpoints/last.pt to resume from")
    saved = load_run_config(run_dir)
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        if key.startswith("hydra") or key == "resume":
            continue
        if "." not in key:
            raise UserError(
                f"resume keeps the run's own '{key}' choice; only dotted overrides such as trainer.epochs=30 apply"
            )
        OmegaConf.update(saved, key, override.value(), merge=True)
    saved.resume = str(run_dir)
    return saved
