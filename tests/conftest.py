"""Shared helpers: run the real `vitcli` CLI in a subprocess, tiny configs, hydra compose."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# A run that exercises the whole loop in a few seconds on 2 CPU cores.
TINY = [
    "model=vit_pico",
    "model.patch_size=4",
    "data=synthetic",
    "data.num_samples=160",
    "data.img_size=16",
    "data.native_size=16",
    "data.batch_size=32",
    "trainer.epochs=2",
    "trainer.progress=plain",
    "trainer.log_interval=2",
]


def vitcli(*args: str, cwd: Path | None = None, env: dict | None = None, check: bool = True, timeout: int = 600):
    """Run `python -m vitcli ARGS` and return the CompletedProcess (text mode)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "vitcli", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"vitcli {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def train_run(run_dir: Path, *overrides: str, **kwargs):
    return vitcli("train", *TINY, *overrides, f"hydra.run.dir={run_dir}", **kwargs)


def read_summary(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One finished tiny training run shared by read-only tests."""
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    train_run(run_dir)
    return run_dir


def compose(config_name: str = "train", overrides: list[str] | None = None):
    """Compose a primary config through Hydra's compose API (no job is run)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    import vitcli.core.schema  # noqa: F401

    with initialize_config_module(config_module="vitcli.conf", version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides or [])
