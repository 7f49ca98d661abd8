"""Fixtures every test file shares (no test imports from this module: ask for a fixture).

- `cli`: run the real `vitcli` in a subprocess (`cli("train", ...)` -> CompletedProcess).
- `tiny_overrides` / `tiny_in_process`: a run that exercises the whole loop in seconds on 2 cores.
- `train_tiny`: train that tiny config into a directory, through the CLI.
- `tiny_run`: one finished tiny run for the whole session (read-only: never write into it);
  `tiny_run_copy`: a private, writable copy of it.
- `compose`: Hydra's compose of a primary config, in-process (no job runs).
- `make_trainer`: a Trainer of the tiny config (plus overrides) in-process.
- `fake_run`: a run directory holding only the files a test gives it.
- `read_summary`: a run's summary.json as a dict.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

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


def _run_vitcli(*args: str, cwd: Path | None = None, env: dict | None = None, check: bool = True,
                timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m vitcli ARGS` and return the CompletedProcess (text mode)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run([sys.executable, "-m", "vitcli", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"vitcli {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _train_tiny(run_dir: Path, *overrides: str, **kwargs: Any) -> subprocess.CompletedProcess:
    return _run_vitcli("train", *TINY, *overrides, f"hydra.run.dir={run_dir}", **kwargs)


def _compose(config_name: str = "train", overrides: list[str] | None = None, return_hydra_config: bool = False):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    import vitcli.core.config_store  # noqa: F401  (registers the schemas)

    with initialize_config_module(config_module="vitcli.conf", version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides or [], return_hydra_config=return_hydra_config)


@pytest.fixture(scope="session")
def cli() -> Callable[..., subprocess.CompletedProcess]:
    """`cli(*args, cwd=None, env=None, check=True, timeout=600)` runs `python -m vitcli` (W&B offline)."""
    return _run_vitcli


@pytest.fixture(scope="session")
def tiny_overrides() -> list[str]:
    return list(TINY)


@pytest.fixture(scope="session")
def tiny_in_process() -> list[str]:
    """The tiny config without a progress bar, for Trainers built inside the test process."""
    return [o for o in TINY if not o.startswith("trainer.progress")] + ["trainer.progress=none"]


@pytest.fixture(scope="session")
def train_tiny() -> Callable[..., subprocess.CompletedProcess]:
    """`train_tiny(run_dir, *overrides, **cli_kwargs)`: `vitcli train` of the tiny config into run_dir."""
    return _train_tiny


@pytest.fixture(scope="session")
def compose() -> Callable[..., Any]:
    """`compose(config_name="train", overrides=[...], return_hydra_config=False)` -> the composed DictConfig."""
    return _compose


@pytest.fixture(scope="session")
def make_trainer(tiny_in_process) -> Callable[..., Any]:
    """`make_trainer(run_dir, *overrides)`: a Trainer of the tiny config, built in-process."""

    def make(run_dir: Path, *overrides: str):
        from vitcli.engine.trainer import Trainer

        return Trainer(_compose("train", [*tiny_in_process, *overrides]), run_dir)

    return make


@pytest.fixture(scope="session")
def read_summary() -> Callable[[Path], dict]:
    return lambda run_dir: json.loads((Path(run_dir) / "summary.json").read_text())


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One finished tiny training run shared by the session: read it, never write into it."""
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    _train_tiny(run_dir)
    return run_dir


@pytest.fixture
def tiny_run_copy(tiny_run, tmp_path) -> Path:
    """A writable copy of `tiny_run` (for tests that write predictions, exports or plots into it)."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


@pytest.fixture(scope="session")
def fake_run() -> Callable[..., Path]:
    """`fake_run(path, config=..., summary=..., metrics=[...], predictions={split: Predictions}, dirs=[...])`:
    a run directory holding only the files given (config: a dict or YAML text; default `name: fake`)."""

    def make(path: Path, config: Any = None, summary: dict | None = None, metrics: list[dict] | None = None,
             predictions: dict | None = None, dirs: tuple[str, ...] = ()) -> Path:
        path = Path(path)
        path.mkdir(parents=True)
        for d in dirs:
            (path / d).mkdir(parents=True, exist_ok=True)
        if isinstance(config, dict):
            import yaml

            config = yaml.safe_dump(config)
        (path / "config.yaml").write_text(config or "name: fake\n")
        if summary is not None:
            (path / "summary.json").write_text(json.dumps(summary))
        if metrics is not None:
            (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
        for split, preds in (predictions or {}).items():
            preds.save(path / "predictions" / f"{split}.npz")
        return path

    return make
