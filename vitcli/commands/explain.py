"""`vitcli explain run=DIR`: where a trained model looks, as plots/explain_<split>_<method>.png.

method=auto picks attention rollout for the ViT family and Grad-CAM for Swin, Mixer and
CNNs (vitcli/tasks/saliency.py); images=PATH explains the user's own files.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import vitcli.core.config_store  # noqa: F401  (registers the schemas)
from vitcli.core.errors import report_user_errors
from vitcli.core.run_paths import run_argument


@report_user_errors
def run_explain(cfg: DictConfig):
    from vitcli.tasks.explain import explain_run

    run_argument(cfg, "explain")
    return explain_run(cfg.run, split=cfg.split, n=cfg.n, method=cfg.method, images=cfg.images,
                       checkpoint=cfg.checkpoint, device=cfg.device, seed=cfg.seed, precision=cfg.precision)


@hydra.main(version_base="1.3", config_path="pkg://vitcli.conf", config_name="explain")
def main(cfg: DictConfig) -> None:
    run_explain(cfg)
