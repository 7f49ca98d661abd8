"""Exact resume: SIGKILL at an arbitrary mid-epoch moment, rerun, same final weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import torch

# Dropout, drop path, MixUp/CutMix, crops, flips and EMA: every RNG the loop has.
HARD = ["trainer.epochs=4", "regularization=heavy", "augmentation=mixup_cutmix", "trainer.ema=true",
        "trainer.ckpt_interval_steps=1", "data.num_samples=200"]


def _weights(run_dir):
    state = torch.load(run_dir / "checkpoints/last.pt", weights_only=True)
    return state


def _kill_mid_epoch(tiny_overrides, run_dir) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.Popen([sys.executable, "-m", "vitcli", "train", *tiny_overrides, *HARD, f"hydra.run.dir={run_dir}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    last = run_dir / "checkpoints/last.pt"
    seen = None
    try:
        while proc.poll() is None:
            if last.is_file():
                state = torch.load(last, weights_only=True)
                if state["epoch"] >= 1 and state["batch_in_epoch"] > 0:
                    proc.send_signal(signal.SIGKILL)  # lands wherever the run is now, maybe mid-save
                    seen = state
                    break
            time.sleep(0.01)
    finally:
        proc.wait()
    assert seen is not None, "the run finished before it could be killed mid-epoch"
    assert proc.returncode == -signal.SIGKILL
    return seen


def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(tiny_overrides, read_summary, train_tiny, tmp_path):
    train_tiny(tmp_path / "reference", *HARD)
    killed = tmp_path / "killed"
    _kill_mid_epoch(tiny_overrides, killed)
    assert read_summary(killed)["status"] == "running"  # the kill left no chance to write more
    proc = train_tiny(killed, *HARD)  # same command, same dir: resumes automatically
    assert "resumed from" in proc.stdout
    ref, res = _weights(tmp_path / "reference"), _weights(killed)
    for key in ("model", "model_ema"):
        assert ref[key].keys() == res[key].keys()
        mismatched = [k for k in ref[key] if not torch.equal(ref[key][k], res[key][k])]
        assert not mismatched, f"{key}: {mismatched[:5]}"
    assert ref["global_step"] == res["global_step"]
    assert read_summary(killed)["best"] == read_summary(tmp_path / "reference")["best"]
    assert read_summary(killed)["status"] == "completed"


def test_resume_flag_continues_a_run_with_its_own_config(cli, read_summary, train_tiny, tmp_path):
    run = tmp_path / "run"
    train_tiny(run)
    proc = cli("train", f"resume={run}", "trainer.epochs=3")
    assert "resumed from" in proc.stdout
    summary = read_summary(run)
    assert summary["epochs_completed"] == 3 and summary["data"] == "synthetic"


def test_resume_rejects_group_overrides_and_missing_runs(cli, train_tiny, tmp_path):
    run = tmp_path / "run"
    train_tiny(run, "trainer.epochs=1")
    proc = cli("train", f"resume={run}", "model=vit_s", check=False)
    assert proc.returncode == 2 and "only dotted overrides" in proc.stderr
    proc = cli("train", f"resume={tmp_path / 'missing'}", check=False)
    # resolved before Hydra makes its run dir from it: nothing is created
    assert proc.returncode == 2 and "no such directory" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "missing").exists()
    (tmp_path / "empty").mkdir()
    proc = cli("train", f"resume={tmp_path / 'empty'}", check=False)
    assert proc.returncode == 2 and "not a vitcli run directory" in proc.stderr and "Traceback" not in proc.stderr
