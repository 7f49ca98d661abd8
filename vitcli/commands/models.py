"""`vitcli models [pattern=GLOB]`: the model presets, their timm names and sizes."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import vitcli.core.config_store  # noqa: F401  (registers the schemas)
from vitcli.core.errors import UserError, report_user_errors


@report_user_errors
def show_models(cfg: DictConfig) -> list[dict]:
    from rich.console import Console
    from rich.table import Table

    from vitcli.models.catalog import preset_rows

    rows = preset_rows(cfg.pattern)
    if not rows:
        raise UserError(f"no model preset matches pattern={cfg.pattern}")
    table = Table(title="vitcli model presets (model=<preset>)")
    for col in ("preset", "timm name", "params (M)", "pretrained input", "kind"):
        table.add_column(col, justify="right" if col.startswith(("params", "pre")) else "left")
    for r in rows:
        table.add_row(r["preset"], r["timm_name"], f"{r['params_m']:.1f}", f"{r['input_size']} px", r["kind"])
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # a pipe or CI log: no reason to wrap at 80
    console.print(table)
    return rows


@hydra.main(version_base="1.3", config_path="pkg://vitcli.conf", config_name="models")
def main(cfg: DictConfig) -> None:
    show_models(cfg)
