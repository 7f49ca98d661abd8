"""Runs as a person names them: `run=latest`, an experiment name (its newest run), a unique prefix
of a run's path or timestamp, or the path itself; and paths shown the way they would be typed."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from vitcli.core.errors import UserError
from vitcli.core.runs import CONFIG, find_run_dirs, require_run_dir

log = logging.getLogger("vitcli")


def trained_runs(folder: str | Path, max_depth: int | None = None) -> list[Path]:
    """The runs at or below `folder` that a command can load (they hold config.yaml), newest first: by
    the time config.yaml was written, which training does at every start and resume."""
    found = [d for d in find_run_dirs(folder, max_depth) if (d / CONFIG).is_file()]
    return sorted(found, key=lambda d: (d / CONFIG).stat().st_mtime, reverse=True)


def display_path(path: Path) -> str:
    """A path as a user would type it: relative to the working directory when under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _shown(paths: list[Path], limit: int = 4) -> str:
    names = ", ".join(display_path(p) for p in paths[:limit])
    return names + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _runs_in(folder: Path, root: Path) -> list[Path]:
    """A folder's runs, newest first; outside the runs root only a few levels are searched (a mistyped
    run= must not walk a dataset)."""
    inside = folder.resolve().is_relative_to(root.resolve()) if root.is_dir() else False
    return trained_runs(folder, None if inside else 4)


def _prefix_matches(text: str, root: Path) -> list[Path]:
    """Runs whose path (as typed, or from the runs root) or name starts with `text`, newest first."""
    typed, found = Path(text).expanduser(), {}
    for base in {typed.parent, root / typed.parent} if "/" in text else {root}:
        if base.is_dir():
            for entry in base.iterdir():
                if entry.is_dir() and entry.name.startswith(typed.name):
                    found.update({d.resolve(): d for d in _runs_in(entry, root)})
    found.update({d.resolve(): d for d in trained_runs(root) if d.name.startswith(text)} if root.is_dir() else {})
    return sorted(found.values(), key=lambda d: (d / CONFIG).stat().st_mtime, reverse=True)


def resolve_run(run: str | Path, runs_root: str | Path = "runs", setting: str = "run") -> Path:
    """What a user typed for `run=` (resume=, each of ensemble's runs=) as a run directory:

    - a run directory, as a path;
    - `latest`: the newest run under `runs_root`;
    - a folder of runs, as a path or as an experiment name under `runs_root`: its newest run;
    - a unique prefix of a run's path (as typed, or from `runs_root`) or of its name (a timestamp).

    Newest is the run whose training last started or resumed. Nothing found, or a prefix that fits
    several runs: one UserError line naming the candidates.
    """
    text, root = str(run), Path(runs_root).expanduser()
    path = Path(text).expanduser()
    if path.is_dir() and (path / CONFIG).is_file():
        return path
    if text == "latest":
        found = trained_runs(root) if root.is_dir() else []
        if not found:
            raise UserError(f"{setting}=latest: no run under {root}/ yet (train one with `vitcli train`, "
                            "or pass runs_root=DIR)")
        return found[0]
    for folder in (path, root / text):
        found = _runs_in(folder, root) if folder.is_dir() else []
        if found:
            return found[0]
    matches = _prefix_matches(text, root)
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UserError(f"{setting}={text} fits {len(matches)} runs: {_shown(matches)}; give more of the path")
    if path.is_dir():
        require_run_dir(path, setting)  # a folder that is no run and holds none: say so
    newest = trained_runs(root) if root.is_dir() else []
    hint = f"newest under {root}/: {_shown(newest, 3)}" if newest else f"no runs under {root}/ yet"
    raise UserError(f"{setting}={text}: no such directory, and no run under {root}/ is named or starts with "
                    f"that ({hint}; `vitcli runs` lists them)")


def run_argument(cfg: Any, command: str, key: str = "run") -> Path:
    """The run a command's `run=` names (resolve_run under cfg.runs_root), written back into `cfg` and
    said in one line when a short form chose it; a missing run= is one line listing the forms."""
    if OmegaConf.is_missing(cfg, key) or cfg[key] in (None, ""):
        raise UserError(f"{key}= is missing: vitcli {command} {key}=latest (the newest run), {key}=<experiment> "
                        f"(its newest run) or {key}=runs/<experiment>/<stamp>; `vitcli runs` lists them")
    typed = str(cfg[key])
    run = resolve_run(typed, cfg.get("runs_root", "runs"), key)
    if run != Path(typed).expanduser():
        log.info(f"{key}={typed}: {display_path(run)}")
    cfg[key] = str(run)
    return run
