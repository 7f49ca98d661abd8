"""SIGINT / SIGTERM stop a run cleanly and resumably; one writer per run dir; readers of a
run that is still training see consistent files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from test_resume import HARD


def _start(tiny_overrides, run_dir, *extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen([sys.executable, "-m", "vitcli", "train", *tiny_overrides, *HARD, *extra, f"hydra.run.dir={run_dir}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_mid_epoch(proc, run_dir, epoch: int = 1) -> dict:
    last = run_dir / "checkpoints/last.pt"
    while proc.poll() is None:
        if last.is_file():
            state = torch.load(last, weights_only=True)
            if state["epoch"] >= epoch and state["batch_in_epoch"] > 0:
                return state
        time.sleep(0.01)
    raise AssertionError(f"the run ended before epoch {epoch}: {proc.communicate()}")


@pytest.fixture(scope="module")
def reference(read_summary, train_tiny, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    train_tiny(run_dir, *HARD)
    return torch.load(run_dir / "checkpoints/last.pt", weights_only=True), read_summary(run_dir)


@pytest.mark.parametrize("sig, code", [pytest.param(signal.SIGINT, 130, id="SIGINT", marks=pytest.mark.slow),
                                       pytest.param(signal.SIGTERM, 143, id="SIGTERM")])
def test_signal_saves_marks_interrupted_and_rerun_resumes_bitwise(tiny_overrides, read_summary, train_tiny, tmp_path, reference, sig, code):
    run_dir = tmp_path / "run"
    proc = _start(tiny_overrides, run_dir)
    _wait_mid_epoch(proc, run_dir)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    line = stderr.strip().splitlines()[-1]
    assert f"interrupted by {sig.name}" in line and f"vitcli train resume={run_dir}" in line
    summary = read_summary(run_dir)
    assert summary["status"] == "interrupted"
    assert (run_dir / "plots" / "curves.png").is_file()
    saved = torch.load(run_dir / "checkpoints/last.pt", weights_only=True)
    assert saved["global_step"] == summary["global_step"] and saved["global_step"] < reference[0]["global_step"]

    proc = train_tiny(run_dir, *HARD)  # the same command again: resumes from the interrupt's last.pt
    assert "resumed from" in proc.stdout
    ref, res = reference[0], torch.load(run_dir / "checkpoints/last.pt", weights_only=True)
    for key in ("model", "model_ema"):
        mismatched = [k for k in ref[key] if not torch.equal(ref[key][k], res[key][k])]
        assert not mismatched, f"{key}: {mismatched[:5]}"
    assert read_summary(run_dir)["best"] == reference[1]["best"]
    assert read_summary(run_dir)["status"] == "completed"


def test_one_writer_per_run_dir_and_readers_see_consistent_files(tiny_overrides, cli, train_tiny, tmp_path):
    run_dir = tmp_path / "run"
    proc = _start(tiny_overrides, run_dir, "trainer.epochs=200")  # checkpoints replaced every step while we read
    try:
        _wait_mid_epoch(proc, run_dir)
        second = train_tiny(run_dir, check=False)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert second.stderr.strip().splitlines() == [
            f"vitcli: error: run dir {run_dir} is in use by another `vitcli train` (pid {proc.pid}); wait for it to "
            "finish or stop it, or train into another directory (hydra.run.dir=...)"]
        for which in ("last", "best"):
            out = cli("eval", f"run={run_dir}", f"checkpoint={which}", cwd=tmp_path)
            assert "top1" in out.stdout + out.stderr
        cli("predict", f"run={run_dir}", cwd=tmp_path)
        assert (run_dir / "predictions" / "val.npz").is_file()
        assert proc.poll() is None, "the run should still be training"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    assert proc.returncode == 143
    from vitcli.launch.runlock import run_lock

    with run_lock(run_dir):  # the lock went with the process
        pass


def test_lock_is_released_after_sigkill(tmp_path):
    code = ("import os, sys; from vitcli.launch.runlock import run_lock\n"
            f"with run_lock({str(tmp_path)!r}):\n    print('locked', flush=True); os.kill(os.getpid(), 9)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL and "locked" in proc.stdout
    from vitcli.launch.runlock import run_lock

    with run_lock(tmp_path):
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
