"""Joblib sweeps on several GPUs: job k trains on cuda:(k mod N) unless trainer.device says otherwise."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from vitcli.search import sweep

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def devices_chosen(compose, monkeypatch, tmp_path, launcher: str, gpus: int, jobs: int = 5, overrides=()) -> list[str]:
    """trainer.device each of `jobs` sweep jobs trains with, as run_sweep_job hands it to fit."""
    from hydra.core.hydra_config import HydraConfig

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    seen = []
    for k in range(jobs):
        hc = OmegaConf.create({"runtime": {"output_dir": str(tmp_path / str(k))}, "job": {"num": k},
                               "launcher": {"_target_": launcher}})
        monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda hc=hc: hc))
        sweep.run_sweep_job(lambda cfg: seen.append(cfg.trainer.device) or 1.0, compose("train", list(overrides)))
    return seen


def test_joblib_jobs_go_round_robin_over_the_gpus(compose, monkeypatch, tmp_path):
    assert devices_chosen(compose, monkeypatch, tmp_path, JOBLIB, gpus=2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert devices_chosen(compose, monkeypatch, tmp_path, JOBLIB, gpus=3, jobs=4) == ["cuda:0", "cuda:1", "cuda:2", "cuda:0"]


@pytest.mark.parametrize("launcher,gpus,overrides", [
    (JOBLIB, 1, []),                          # one GPU: auto as before
    (JOBLIB, 0, []),                          # CPU only
    (BASIC, 4, []),                           # sequential launcher: nothing runs side by side
    (JOBLIB, 4, ["trainer.device=cuda:3"]),   # the user's choice wins
    (JOBLIB, 4, ["trainer.devices=2"]),       # DDP jobs: torchrun places the ranks
])
def test_device_is_left_alone(compose, monkeypatch, tmp_path, launcher, gpus, overrides):
    chosen = devices_chosen(compose, monkeypatch, tmp_path, launcher, gpus=gpus, jobs=2, overrides=overrides)
    expected = "cuda:3" if "trainer.device=cuda:3" in overrides else "auto"
    assert chosen == [expected, expected]
