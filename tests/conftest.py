"""Fixtures every test file shares (no test imports from this module: ask for a fixture).

- `cli`: run `vitcli` through `vitcli.cli.main` in this process (`cli("train", ...)` ->
  CompletedProcess): the real dispatch and Hydra apps without a Python and torch start-up each.
- `cli_process`: the same in a real `python -m vitcli` subprocess, for what only a process shows
  (signals, exit statuses set by the interpreter, what gets imported, launchers that fork).
- `tiny_overrides` / `tiny_in_process`: a run that exercises the whole loop in seconds on 2 cores.
- `train_tiny`: train that tiny config into a directory, through the CLI (in-process).
- `tiny_run`: one finished tiny run for the whole session (read-only: never write into it);
  `tiny_run_copy`: a private, writable copy of it.
- `compose`: Hydra's compose of a primary config, in-process (no job runs).
- `make_trainer`: a Trainer of the tiny config (plus overrides) in-process.
- `fake_run`: a run directory holding only the files a test gives it.
- `read_summary`: a run's summary.json as a dict.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable

import pytest

# pytest-xdist's workers share the cores: one torch thread each, set before torch loads. Runs
# started as subprocesses inherit it, so in-process and subprocess runs still compute alike.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# Folder indexes and cached splits go to a temporary cache, not the user's ~/.cache/vitcli
# (tests that need their own set VITCLI_CACHE or data.cache_dir themselves).
os.environ.setdefault("VITCLI_CACHE", tempfile.mkdtemp(prefix="vitcli-test-cache-"))

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


@contextlib.contextmanager
def _environment(env: dict[str, str | None]):
    """os.environ with `env` set (None: removed), all of it restored afterwards: a run may set
    variables for its children (torchrun sets OMP_NUM_THREADS=1), which must not outlive it."""
    saved = dict(os.environ)
    try:
        for k, v in env.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, str(v))
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _captured_output():
    """Capture fds 1 and 2 and sys.stdout/sys.stderr into files; yields a dict filled on exit."""
    result: dict[str, str] = {}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        saved_fds = os.dup(1), os.dup(2)
        saved_streams = sys.stdout, sys.stderr
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdout = open(1, "w", buffering=1, closefd=False, errors="replace")  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False, errors="replace")  # noqa: SIM115
        try:
            yield result
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stdout, sys.stderr = saved_streams
            os.dup2(saved_fds[0], 1)
            os.dup2(saved_fds[1], 2)
            os.close(saved_fds[0])
            os.close(saved_fds[1])
            for name, f in (("stdout", out), ("stderr", err)):
                f.seek(0)
                result[name] = f.read().decode(errors="replace")


def _drop_run_logging() -> None:
    """Close the handlers a Hydra job put on the root logger (they point at the captured
    streams and the run's log file); pytest's own handlers stay."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) in (logging.StreamHandler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()


@contextlib.contextmanager
def _signal_handlers_kept():
    """torchrun's agent (trainer.devices=N) installs SIGTERM/SIGINT handlers in the process that
    launches it and leaves them; forked children (a Pool's workers) would inherit them."""
    signums = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
    saved = {s: signal.getsignal(s) for s in signums}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def _torch_globals_kept():
    """A run may set torch's process-wide state (trainer.threads -> set_num_threads); put it back so
    the next in-process run computes what a fresh process would."""
    import torch

    threads = torch.get_num_threads()
    deterministic, matmul = torch.are_deterministic_algorithms_enabled(), torch.get_float32_matmul_precision()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.set_float32_matmul_precision(matmul)


def _run_in_process(*args: str, cwd: Path | None = None, env: dict | None = None, check: bool = True,
                    timeout: int = 600) -> subprocess.CompletedProcess:
    """`vitcli ARGS` through vitcli.cli.main in this process, as a CompletedProcess (timeout unused:
    the process-wide limits are pytest's)."""
    from vitcli import cli

    code = 0
    saved_cwd, saved_argv = os.getcwd(), list(sys.argv)
    run_env = {"WANDB_MODE": "offline", "HYDRA_FULL_ERROR": None, **(env or {})}
    with _environment(run_env), _signal_handlers_kept(), _torch_globals_kept(), _captured_output() as output:
        try:
            if cwd is not None:
                os.chdir(cwd)
            sys.argv = ["vitcli"]
            cli.main(list(map(str, args)))
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        except BaseException:  # what the interpreter would print before exiting 1
            traceback.print_exc()
            code = 1
        finally:
            os.chdir(saved_cwd)
            sys.argv = saved_argv
            _drop_run_logging()
    proc = subprocess.CompletedProcess(["vitcli", *args], code, output["stdout"], output["stderr"])
    if check and code != 0:
        raise AssertionError(f"vitcli {' '.join(args)} failed ({code}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _train_tiny(run_dir: Path, *overrides: str, **kwargs: Any) -> subprocess.CompletedProcess:
    return _run_in_process("train", *TINY, *overrides, f"hydra.run.dir={run_dir}", **kwargs)


def _compose(config_name: str = "train", overrides: list[str] | None = None, return_hydra_config: bool = False):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    import vitcli.core.config_store  # noqa: F401  (registers the schemas)

    with initialize_config_module(config_module="vitcli.conf", version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides or [], return_hydra_config=return_hydra_config)


@pytest.fixture(scope="session")
def cli() -> Callable[..., subprocess.CompletedProcess]:
    """`cli(*args, cwd=None, env=None, check=True)` runs `vitcli ARGS` in this process (W&B offline)."""
    return _run_in_process


@pytest.fixture(scope="session")
def cli_process() -> Callable[..., subprocess.CompletedProcess]:
    """`cli_process(*args, cwd=None, env=None, check=True, timeout=600)`: `python -m vitcli ARGS`."""
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
