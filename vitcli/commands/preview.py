"""`vitcli preview [train overrides] [n=32]`: one training batch as the model sees it.

Writes runs/previews/<stamp>/plots/preview.png (vitcli/tasks/preview.py).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import vitcli.core.config_store  # noqa: F401  (registers the schemas)
from vitcli.core.errors import report_user_errors


@report_user_errors
def run_preview(cfg: DictConfig):
    from hydra.core.hydra_config import HydraConfig

    from vitcli.tasks.preview import write_preview

    return write_preview(cfg, HydraConfig.get().runtime.output_dir, cfg.n)


@hydra.main(version_base="1.3", config_path="pkg://vitcli.conf", config_name="preview")
def main(cfg: DictConfig) -> None:
    run_preview(cfg)
