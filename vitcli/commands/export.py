"""`vitcli export run=DIR [checkpoint=best] [format=timm|onnx] [out=PATH]`: use the model outside vitcli.

format=timm: a folder `timm.create_model("local-dir:PATH", pretrained=True)` loads, class
names in config.json; format=onnx: one .onnx file with a dynamic batch axis. See vitcli/tasks/export.py.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

import vitcli.core.config_store  # noqa: F401  (registers the schemas)
from vitcli.core.errors import report_user_errors
from vitcli.core.run_paths import run_argument

log = logging.getLogger("vitcli")


@report_user_errors
def run_export(cfg: DictConfig):
    from vitcli.tasks.export import export_run

    run_argument(cfg, "export")
    out = export_run(cfg.run, cfg.checkpoint, cfg.format, cfg.out, cfg.device, cfg.data_check)
    if cfg.format == "timm":
        log.info(f"wrote {out}  (load it: timm.create_model('local-dir:{out}', pretrained=True))")
    else:
        log.info(f"wrote {out}  (inputs 'images' [N,3,H,W] float32, normalized; outputs 'logits')")
    return out


@hydra.main(version_base="1.3", config_path="pkg://vitcli.conf", config_name="export")
def main(cfg: DictConfig) -> None:
    run_export(cfg)
