"""The `vitcli` entry point: help, dispatch, Hydra behaviour and one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _help_in_fresh_process(*args: str) -> tuple[str, list[str]]:
    """(stdout, the heavy modules imported) of `vitcli ARGS` in a fresh interpreter."""
    code = (
        "import sys, io, contextlib\n"
        "from vitcli import cli\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    try:\n"
        f"        cli.main({list(args)!r})\n"
        "    except SystemExit as e:\n"
        "        assert e.code in (0, None), e.code\n"
        "heavy = [m for m in ('torch', 'timm', 'hydra', 'wandb') if m in sys.modules]\n"
        "print(buf.getvalue())\n"
        "print('HEAVY', *heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    body, _, heavy = out.rpartition("HEAVY")
    return body, heavy.split()


def test_help_lists_commands_without_importing_torch():
    out, heavy = _help_in_fresh_process("--help")
    assert heavy == []
    for command in ("train", "eval", "models", "info"):
        assert f"  {command} " in out
    assert "format=wds" in out  # prepare writes WebDataset shards too, not only packs


def test_command_help_is_its_own_keys_read_without_hydra():
    """`vitcli eval --help`: eval's keys with type, default and the schema's comment, its examples, and
    none of train's groups; answered from the schemas and conf/ files, with no Hydra or torch loaded."""
    out, heavy = _help_in_fresh_process("eval", "--help")
    assert heavy == []
    assert "checkpoint=best  (best|last|ema)  best (top-1 on val)" in out
    assert "eval.tta=none  (none|flip|multicrop)  test-time augmentation" in out
    assert "vitcli eval run=latest" in out  # the examples of conf/eval.yaml
    for other in ("augmentation:", "augmentation.", "optimizer", "model.", "config groups", "trainer.epochs"):
        assert other not in out


def test_train_help_lists_groups_and_their_keys(cli):
    out = cli("train", "--help").stdout
    assert "model: clip_b16" in out and "[vit_pico]" in out and "hparams_search: lr_grid optuna  (off by default)" in out
    assert "optimizer.lr=0.001  (float)  peak learning rate" in out
    assert "model.patch_size=8  (int|null)" in out  # the default preset's value
    assert "worst=" not in out and "run=???" not in out  # eval's keys
    assert "model.timm_name=swin_tiny_patch4_window7_224" in cli("train", "model=swin_t", "--help").stdout
    assert cli("help", "train").stdout == out


def test_help_of_an_unknown_option_is_one_line(cli):
    proc = cli("train", "model=nope", "--help", check=False)
    assert proc.returncode == 2 and "model=nope: no such option" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_hydra_help_is_still_hydras(cli):
    assert "== Flags ==" in cli("train", "--hydra-help").stdout


def test_unknown_command_exits_2_with_one_line(cli):
    proc = cli("fly", check=False)
    assert proc.returncode == 2
    assert "unknown command 'fly'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


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


def test_finished_train_prints_next_commands_that_run(cli, train_tiny, tmp_path):
    """The lines a finished `vitcli train` prints name its own run, and run as printed."""
    run = tmp_path / "run"
    proc = train_tiny(run, "trainer.epochs=1")
    printed = [line.split("#")[0].split() for line in proc.stdout.splitlines() if line.strip().startswith("vitcli ")]
    commands = {words[1]: words[1:] for words in printed}
    assert set(commands) == {"eval", "predict", "export", "explain"}
    assert all(f"run={run}" in words for words in printed)
    assert "top1" in cli(*commands["eval"], "save=false").stdout
    cli(*commands["export"])
    assert (run / "export" / "best_timm" / "config.json").is_file()


def test_wandb_logger_without_wandb_says_how_to_install_it(cli, tiny_overrides, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # an environment without the wandb extra
    proc = cli("train", *tiny_overrides, "logger=wandb", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "logger=wandb needs the wandb package: pip install -e '.[wandb]'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "checkpoints").exists()  # stopped before any work
