"""`vitcli models [pattern=GLOB]`: the model presets, their timm names and sizes."""

from __future__ import annotations

import fnmatch

import hydra
from omegaconf import DictConfig

import vitcli.core.schema  # noqa: F401  (registers the schemas)
from vitcli.core.errors import UserError, report_user_errors


def preset_rows(pattern: str | None = None) -> list[dict]:
    import timm
    import torch

    from vitcli.core.options import group_options, load_option

    rows = []
    for name in group_options("model"):
        if pattern and not fnmatch.fnmatch(name, pattern):
            continue
        opt = load_option("model", name)
        timm_name = opt.timm_name
        kwargs = dict(opt.get("kwargs") or {})
        if opt.get("patch_size"):
            kwargs["patch_size"] = opt.patch_size
        with torch.device("meta"):  # parameter count without allocating weights
            from vitcli.models.factory import _build

            model = _build(timm_name, dict(kwargs))
        size = model.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
        rows.append({"preset": name, "timm_name": timm_name, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
                     "input_size": size, "kind": "CNN" if opt._get_node("img_size")._value() is None else "ViT-like"})
    return rows


@report_user_errors
def show_models(cfg: DictConfig) -> list[dict]:
    from rich.console import Console
    from rich.table import Table

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
