"""`vitcli runs [root=runs] [sort=val_top1] [filter=GLOB] [limit=N]`: one table of all runs.

Reads only each run's summary.json (config.yaml for runs that never wrote one), and
does not descend into checkpoints/, wandb/ or other run internals, so hundreds of
runs list in well under a second after start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

import vitcli.core.config_store  # noqa: F401  (registers the schemas)
from vitcli.core.errors import UserError, report_user_errors


@report_user_errors
def list_runs(cfg: DictConfig) -> list[dict[str, Any]]:
    from vitcli.core.runs import find_run_dirs
    from vitcli.tasks.runs_table import (
        add_slurm_states,
        matches,
        print_table,
        report_study,
        run_row,
        sort_rows,
    )

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
    add_slurm_states(shown)
    print_table(shown, f"{len(shown)} of {total} runs under {root}, sorted by {cfg.sort}")
    report_study(root)  # an optuna sweep dir: its study and plots
    return shown


@hydra.main(version_base="1.3", config_path="pkg://vitcli.conf", config_name="runs")
def main(cfg: DictConfig) -> None:
    list_runs(cfg)
