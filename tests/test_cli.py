"""The `vitcli` entry point: help, dispatch, Hydra behaviour and one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_help_lists_commands_without_importing_torch():
    code = (
        "import sys, io, contextlib\n"
        "from vitcli import cli\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    try:\n"
        "        cli.main(['--help'])\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
        "heavy = [m for m in ('torch', 'timm', 'hydra', 'wandb') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print(buf.getvalue())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for command in ("train", "eval", "models"):
        assert f"  {command} " in out


def test_unknown_command_exits_2_with_one_line(cli):
    proc = cli("fly", check=False)
    assert proc.returncode == 2
    assert "unknown command 'fly'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_train_help_is_hydras(cli):
    proc = cli("train", "--help")
    assert "== Configuration groups ==" in proc.stdout
    for group in ("model:", "data:", "optimizer:", "regularization:", "scheduler:"):
        assert group in proc.stdout
    assert "vit_pico" in proc.stdout


def test_cfg_job_prints_composed_config_with_overrides(cli):
    proc = cli("train", "model=swin_t", "optimizer.lr=3e-4", "--cfg", "job")
    assert "timm_name: swin_tiny_patch4_window7_224" in proc.stdout
    assert "lr: 0.0003" in proc.stdout


@pytest.mark.parametrize(
    "override, needle",
    [
        ("model=nope", "model"),
        ("optimizer.lr=abc", "optimizer.lr"),
        ("optimizer.lrr=0.1", "lrr"),
        ("data.img_size=-1", "data.img_size=-1"),
        ("trainer.epochs=0", "trainer.epochs=0"),
    ],
)
def test_bad_train_input_is_one_clear_error(cli, tiny_overrides, tmp_path, override, needle):
    proc = cli("train", *tiny_overrides, override, f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert needle in proc.stderr


def test_eval_of_missing_run_is_one_line(cli, tmp_path):
    proc = cli("eval", f"run={tmp_path / 'missing'}", check=False)
    assert proc.returncode == 2
    assert "no such directory" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "missing").exists()  # eval must not create it


def test_models_lists_presets_and_timm_names(cli):
    proc = cli("models", "pattern=vit_*")
    assert "vit_tiny_patch16_224" in proc.stdout
    assert "swin" not in proc.stdout
