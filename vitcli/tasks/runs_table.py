"""Rows of the run browser (`vitcli runs`): one per run dir, read from its summary.json
(config.yaml for runs that never wrote one), filtered, sorted and printed as a rich table."""

from __future__ import annotations

import fnmatch
import json
import math
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vitcli.core import phases, runs
from vitcli.core.errors import UserError
from vitcli.launch import slurm
from vitcli.search.study import describe, draw, sweep_study

NUMERIC = ("val_top1", "val_top5", "val_loss", "wall_time_s", "non_step", "epochs", "updated")
ASCENDING = ("val_loss",)  # smaller is better; other numbers sort largest first


def _from_config(run_dir: Path) -> dict[str, Any]:

    try:
        cfg = yaml.safe_load((run_dir / runs.CONFIG).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    pick = lambda d, k: (cfg.get(d) or {}).get(k) if isinstance(cfg.get(d), dict) else None  # noqa: E731
    return {"experiment": cfg.get("name"), "model": pick("model", "name"), "data": pick("data", "name"),
            "epochs": pick("trainer", "epochs")}


def run_row(run_dir: Path, root: Path) -> dict[str, Any]:
    path = run_dir / runs.SUMMARY
    try:
        summary = json.loads(path.read_text())
        updated = path.stat().st_mtime
    except (OSError, ValueError):
        summary, updated = {"status": "unknown", **_from_config(run_dir)}, (run_dir / runs.CONFIG).stat().st_mtime
    best = summary.get("best") or {}
    return {
        "run": str(run_dir.relative_to(root)) if run_dir != root else ".",
        "experiment": summary.get("experiment"), "model": summary.get("model"), "data": summary.get("data"),
        "epochs": summary.get("epochs_completed"), "epochs_total": summary.get("epochs"),
        "val_top1": best.get("val_top1"), "val_top5": best.get("val_top5"), "val_loss": best.get("val_loss"),
        "wall_time_s": summary.get("wall_time_s"), "non_step": _percent(phases.non_step_share(summary)),
        "status": summary.get("status", "unknown"),
        "updated": updated, "curves": str(run_dir / runs.CURVES) if (run_dir / runs.CURVES).is_file() else None,
        "slurm": summary.get("slurm"),
    }


def add_slurm_states(rows: list[dict[str, Any]]) -> None:
    """The live SLURM state of runs that came from SLURM jobs and have not finished (one squeue call)."""
    jobs = {r["slurm"]["job_id"]: r for r in rows if r.get("slurm") and r["status"] in ("running", "requeued")}
    states = slurm.queue_states(list(jobs)) if jobs else None
    for job, row in jobs.items():
        row["slurm"] = {**row["slurm"], "state": (states or {}).get(job)}


def slurm_cell(info: dict[str, Any] | None) -> str:
    """job 17 PENDING, requeued 2x"""
    if not info:
        return ""
    requeues = info.get("requeues") or 0
    return " ".join(p for p in (f"job {info.get('job_id')}", info.get("state") or "") if p) + \
        (f", requeued {requeues}x" if requeues else "")


def matches(row: dict[str, Any], pattern: str) -> bool:
    if not any(ch in pattern for ch in "*?["):
        pattern = f"*{pattern}*"
    fields = (row["run"], row["experiment"], row["model"], row["data"], row["status"],
              (row.get("slurm") or {}).get("job_id"))
    return any(fnmatch.fnmatch(str(f or ""), pattern) for f in fields)


def sort_rows(rows: list[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
    key = sort.lstrip("-")
    if not rows or key not in rows[0]:
        choices = ", ".join(k for k in (rows[0] if rows else {}) if k not in ("epochs_total", "curves", "slurm"))
        raise UserError(f"sort={sort}: no such column; use one of {choices} (prefix - to reverse)")
    present = [r for r in rows if r[key] is not None and not (isinstance(r[key], float) and math.isnan(r[key]))]
    missing = [r for r in rows if r not in present]
    descending = key in NUMERIC and key not in ASCENDING
    present.sort(key=lambda r: r[key] if key in NUMERIC else str(r[key]), reverse=descending)
    if sort.startswith("-"):
        present.reverse()
    return present + missing  # runs without the value always last


def _percent(share: float | None) -> float | None:
    return None if share is None else round(100 * share, 1)


def _fmt(value: Any, spec: str = "") -> str:
    return "" if value is None else format(value, spec)


def print_table(rows: list[dict[str, Any]], title: str) -> None:

    table = Table(title=title)
    with_slurm = any(r.get("slurm") for r in rows)  # a column only when some run came from a SLURM job
    # non-step: the share of the run's wall time outside the training step (summary.json's phases)
    for col in ("run", "experiment", "model", "data", "epochs", "top-1", "top-5", "wall", "non-step", "status",
                *(["slurm"] if with_slurm else []), "updated", "curves"):
        table.add_column(col, justify="right" if col in ("epochs", "top-1", "top-5", "wall", "non-step") else "left",
                         overflow="fold")
    styles = {"completed": "green", "failed": "red", "interrupted": "yellow", "running": "cyan", "requeued": "cyan"}
    for r in rows:
        wall = r["wall_time_s"]
        curves = f"[link=file://{Path(r['curves']).resolve()}]{escape(runs.CURVES)}[/link]" if r["curves"] else ""
        table.add_row(escape(r["run"]), escape(str(r["experiment"] or "")), escape(str(r["model"] or "")),
                      escape(str(r["data"] or "")), f"{_fmt(r['epochs'])}/{_fmt(r['epochs_total'])}",
                      _fmt(r["val_top1"], ".2f"), _fmt(r["val_top5"], ".2f"),
                      time.strftime("%H:%M:%S", time.gmtime(wall)) if wall is not None else "",
                      f"{r['non_step']:.1f}%" if r["non_step"] is not None else "",
                      f"[{styles.get(r['status'], 'white')}]{escape(str(r['status']))}[/]",
                      *([escape(slurm_cell(r.get("slurm")))] if with_slurm else []),
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(r["updated"])), curves)
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # a pipe or CI log: no reason to wrap at 80
    console.print(table)


def report_study(root: Path) -> None:
    """Pointed at an optuna sweep dir: the study's one-line summary, and its plots redrawn in
    <sweep dir>/plots/ (they show every trial, those other workers added included)."""
    study = sweep_study(root)
    if study is None:
        return
    print(describe(study))
    paths = draw(study, root)
    if paths:
        print(f"study plots: {', '.join(p.name for p in paths)} in {root / 'plots'}")
