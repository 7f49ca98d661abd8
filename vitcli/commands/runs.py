"""`vitcli runs [root=runs] [sort=val_top1] [filter=GLOB] [limit=N]`: one table of all runs.

Reads only each run's summary.json (config.yaml for runs that never wrote one), and
does not descend into checkpoints/, wandb/ or other run internals, so hundreds of
runs list in well under a second after start-up.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

import vitcli.config  # noqa: F401  (registers the schemas)
from vitcli.errors import UserError, report_user_errors

SKIP = {".hydra", "checkpoints", "wandb", "plots", "predictions", "submission", ".submitit", "__pycache__"}
NUMERIC = ("val_top1", "val_top5", "val_loss", "wall_time_s", "epochs", "updated")
ASCENDING = ("val_loss",)  # smaller is better; other numbers sort largest first
CURVES = os.path.join("plots", "curves.png")


def find_run_dirs(root: Path) -> list[Path]:
    """Directories holding summary.json (or config.yaml); a run dir is not searched further."""
    found, stack = [], [Path(root)]
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        names = {e.name for e in entries}
        if "summary.json" in names or ("config.yaml" in names and ".hydra" in names):
            found.append(d)
            continue
        stack.extend(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False) and e.name not in SKIP)
    return found


def _from_config(run_dir: Path) -> dict[str, Any]:
    import yaml

    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    pick = lambda d, k: (cfg.get(d) or {}).get(k) if isinstance(cfg.get(d), dict) else None  # noqa: E731
    return {"experiment": cfg.get("name"), "model": pick("model", "name"), "data": pick("data", "name"),
            "epochs": pick("trainer", "epochs")}


def run_row(run_dir: Path, root: Path) -> dict[str, Any]:
    path = run_dir / "summary.json"
    try:
        summary = json.loads(path.read_text())
        updated = path.stat().st_mtime
    except (OSError, ValueError):
        summary, updated = {"status": "unknown", **_from_config(run_dir)}, (run_dir / "config.yaml").stat().st_mtime
    best = summary.get("best") or {}
    return {
        "run": str(run_dir.relative_to(root)) if run_dir != root else ".",
        "experiment": summary.get("experiment"), "model": summary.get("model"), "data": summary.get("data"),
        "epochs": summary.get("epochs_completed"), "epochs_total": summary.get("epochs"),
        "val_top1": best.get("val_top1"), "val_top5": best.get("val_top5"), "val_loss": best.get("val_loss"),
        "wall_time_s": summary.get("wall_time_s"), "status": summary.get("status", "unknown"),
        "updated": updated, "curves": str(run_dir / CURVES) if (run_dir / CURVES).is_file() else None,
    }


def matches(row: dict[str, Any], pattern: str) -> bool:
    if not any(ch in pattern for ch in "*?["):
        pattern = f"*{pattern}*"
    fields = (row["run"], row["experiment"], row["model"], row["data"], row["status"])
    return any(fnmatch.fnmatch(str(f or ""), pattern) for f in fields)


def sort_rows(rows: list[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
    key = sort.lstrip("-")
    if not rows or key not in rows[0]:
        choices = ", ".join(k for k in (rows[0] if rows else {}) if k not in ("epochs_total", "curves"))
        raise UserError(f"sort={sort}: no such column; use one of {choices} (prefix - to reverse)")
    present = [r for r in rows if r[key] is not None and not (isinstance(r[key], float) and math.isnan(r[key]))]
    missing = [r for r in rows if r not in present]
    descending = key in NUMERIC and key not in ASCENDING
    present.sort(key=lambda r: r[key] if key in NUMERIC else str(r[key]), reverse=descending)
    if sort.startswith("-"):
        present.reverse()
    return present + missing  # runs without the value always last


def _fmt(value: Any, spec: str = "") -> str:
    return "" if value is None else format(value, spec)


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    for col in ("run", "experiment", "model", "data", "epochs", "top-1", "top-5", "wall", "status", "updated", "curves"):
        table.add_column(col, justify="right" if col in ("epochs", "top-1", "top-5", "wall") else "left",
                         overflow="fold")
    styles = {"completed": "green", "failed": "red", "interrupted": "yellow", "running": "cyan"}
    for r in rows:
        wall = r["wall_time_s"]
        curves = f"[link=file://{Path(r['curves']).resolve()}]{escape(CURVES)}[/link]" if r["curves"] else ""
        table.add_row(escape(r["run"]), escape(str(r["experiment"] or "")), escape(str(r["model"] or "")),
                      escape(str(r["data"] or "")), f"{_fmt(r['epochs'])}/{_fmt(r['epochs_total'])}",
                      _fmt(r["val_top1"], ".2f"), _fmt(r["val_top5"], ".2f"),
                      time.strftime("%H:%M:%S", time.gmtime(wall)) if wall is not None else "",
                      f"[{styles.get(r['status'], 'white')}]{escape(str(r['status']))}[/]",
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(r["updated"])), curves)
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # a pipe or CI log: no reason to wrap at 80
    console.print(table)


@report_user_errors
def list_runs(cfg: DictConfig) -> list[dict[str, Any]]:
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise UserError(f"root={cfg.root}: no such directory (runs are written under runs/ by `vitcli train`; "
                        "pass root=DIR to list another folder)")
    rows = [run_row(d, root) for d in sorted(find_run_dirs(root))]
    total = len(rows)
    if cfg.filter:
        rows = [r for r in rows if matches(r, str(cfg.filter))]
    if not rows:
        print(f"no runs under {root}" + (f" match filter={cfg.filter} ({total} runs in all)" if cfg.filter else ""))
        return []
    rows = sort_rows(rows, cfg.sort)
    shown = rows[: cfg.limit] if cfg.limit > 0 else rows
    print_table(shown, f"{len(shown)} of {total} runs under {root}, sorted by {cfg.sort}")
    return shown


@hydra.main(version_base="1.3", config_path="pkg://vitcli.conf", config_name="runs")
def main(cfg: DictConfig) -> None:
    list_runs(cfg)
