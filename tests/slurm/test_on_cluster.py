"""vitcli on a real one-node SLURM cluster (tests/slurm/cluster.sh): DDP from SLURM's own tasks,
and runs that SLURM stops (scontrol requeue, time limits) coming back to finish bitwise equal
to an uninterrupted run.

The jobs of all tests are started together by one module fixture, so the node's two CPUs
stay busy: single-task jobs first, then the 2-task DDP jobs. Every process trains with one
thread, which also makes runs comparable bitwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SBATCH = REPO / "docs" / "slurm" / "train.sbatch"
ONE_THREAD = ["trainer.device=cpu", "trainer.threads=1", "trainer.ckpt_interval_steps=1"]
# every RNG the loop has (dropout, drop path, MixUp/CutMix, EMA); 120 steps, about 40 s of one idle
# CPU core: a job with a one-minute limit (SLURM warns 15 s before it) needs two or three allocations
LONG = ["regularization=heavy", "augmentation=mixup_cutmix", "trainer.ema=true", "data.num_samples=200",
        "trainer.epochs=24"]
DDP = ["regularization=heavy", "augmentation=mixup_cutmix", "data.num_samples=200", "trainer.epochs=4"]
LAUNCHER = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=1"]
SBATCH_CPU = ["--gpus-per-node=0", "--cpus-per-task=1", "--time=15", "--mem=1G"]
WAIT_S = 1200  # all jobs together; a hang fails instead of blocking CI (they take ~5 min on 2 idle cores)
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # srun vitcli ...
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def _vitcli(*args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vitcli", *args], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env=_env(), cwd=log.parent)


def _sbatch(tmp: Path, *args: str) -> str:
    out = subprocess.run(["sbatch", "--parsable", f"--output={tmp}/slurm-%j.out", *args], capture_output=True,
                         text=True, env=_env(), cwd=tmp, check=True)
    return out.stdout.strip().split(";")[0]


def _job(job: str) -> dict[str, str]:
    import re

    out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def _wait_job(job: str, deadline: float) -> dict[str, str]:
    """Until the job has ended for good (a requeued job goes back to PENDING and runs again)."""
    while time.time() < deadline:
        fields = _job(job)
        if fields.get("JobState") in ENDED:
            return fields
        time.sleep(2)
    raise AssertionError(f"SLURM job {job} still not ended: {_job(job)}")


def _wait_submitted(name: str, deadline: float) -> None:
    """Until a job named `name` is in the queue (a Hydra sweep submits a few seconds after it starts)."""
    while time.time() < deadline:
        if subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True).stdout.strip():
            return
        time.sleep(1)


def _requeue_mid_epoch(run_dir: Path, job: str, box: dict) -> None:
    """`scontrol requeue` the job once its run has a mid-epoch checkpoint after the first epoch."""
    last, end = run_dir / "checkpoints" / "last.pt", time.time() + WAIT_S
    while time.time() < end and not box.get("done"):
        try:
            state = torch.load(last, weights_only=True)
        except Exception:  # not there yet, or being replaced
            time.sleep(0.2)
            continue
        if state["epoch"] >= 1 and state["batch_in_epoch"] > 0:
            box["at_step"] = state["global_step"]
            subprocess.run(["scontrol", "requeue", job], check=True, capture_output=True)
            return
        time.sleep(0.2)


def _finish(proc: subprocess.Popen, log: Path, deadline: float) -> str:
    try:
        proc.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"still running:\n{log.read_text()[-3000:]}")
    return log.read_text()


@pytest.fixture(scope="module")
def jobs(slurm_cluster, tiny_overrides, tmp_path_factory):
    """Start every job of this module at once (single-task jobs first); each test waits for its own."""
    tmp = tmp_path_factory.mktemp("slurm")
    single, ddp = [*tiny_overrides, *ONE_THREAD, *LONG], [*tiny_overrides, *ONE_THREAD, *DDP]
    runs_root = f"runs_root={tmp}/runs"
    started: dict = {"deadline": time.time() + WAIT_S}
    # (a) the plain sbatch script, requeued with scontrol mid-epoch
    job = _sbatch(tmp, *SBATCH_CPU, "--ntasks-per-node=1", str(SBATCH), *single, runs_root, "name=requeued")
    run_dir = tmp / "runs" / "requeued" / f"slurm-{job}"
    started["requeued"] = (job, run_dir, {})
    threading.Thread(target=_requeue_mid_epoch, args=(run_dir, job, started["requeued"][2]), daemon=True).start()
    # (b) a sweep point with a one-minute limit through hydra/launcher=slurm
    log = tmp / "timeout.log"
    # a loaded machine spends most of each minute starting up: allow it more requeues than the preset's 10
    started["timeout"] = (_vitcli("train", "-m", *LAUNCHER, "hydra.launcher.timeout_min=1",
                                  "hydra.launcher.max_num_timeout=30", *single, runs_root,
                                  "name=timeout", "hydra.launcher.name=timeout", f"hydra.sweep.dir={tmp}/timeout_sweep",
                                  log=log), log, tmp / "timeout_sweep")
    # the uninterrupted single-process reference, outside SLURM
    log = tmp / "reference.log"
    started["reference"] = (_vitcli("train", *single, f"hydra.run.dir={tmp}/reference", log=log), log,
                            tmp / "reference")
    _wait_submitted("timeout", time.time() + 180)
    # DDP: two SLURM tasks of a submitit job (the reference of (c)), and (c) the sbatch script's two tasks
    log = tmp / "ddp.log"
    started["ddp"] = (_vitcli("train", "-m", *LAUNCHER, "hydra.launcher.tasks_per_node=2",
                              "hydra.launcher.timeout_min=10", *ddp, runs_root, "name=ddp",
                              f"hydra.sweep.dir={tmp}/ddp_sweep", log=log), log, tmp / "ddp_sweep" / "0")
    job = _sbatch(tmp, *SBATCH_CPU, "--ntasks-per-node=2", str(SBATCH), *ddp, runs_root, "name=ddp_requeued")
    run_dir = tmp / "runs" / "ddp_requeued" / f"slurm-{job}"
    started["ddp_requeued"] = (job, run_dir, {})
    threading.Thread(target=_requeue_mid_epoch, args=(run_dir, job, started["ddp_requeued"][2]), daemon=True).start()
    yield started
    for key in ("requeued", "ddp_requeued"):
        started[key][2]["done"] = True
    subprocess.run(["scancel", "--quiet", *[started[k][0] for k in ("requeued", "ddp_requeued")]])
    for key in ("timeout", "reference", "ddp"):
        started[key][0].kill()


def _same_final_weights(a: Path, b: Path) -> None:
    ref = torch.load(a / "checkpoints" / "last.pt", weights_only=True)
    res = torch.load(b / "checkpoints" / "last.pt", weights_only=True)
    assert ref["global_step"] == res["global_step"]
    for key in ("model", "model_ema", "optimizer"):
        if key not in ref:
            continue
        left, right = ref[key], res[key]
        if key == "optimizer":
            left, right = left["state"], right["state"]
            left = {f"{i}.{k}": v for i, s in left.items() for k, v in s.items()}
            right = {f"{i}.{k}": v for i, s in right.items() for k, v in s.items()}
        assert left.keys() == right.keys()
        mismatched = [k for k in left if not torch.equal(torch.as_tensor(left[k]), torch.as_tensor(right[k]))]
        assert not mismatched, f"{key}: {mismatched[:5]}"


@pytest.fixture(scope="module")
def reference(jobs, read_summary):
    proc, log, run_dir = jobs["reference"]
    _finish(proc, log, jobs["deadline"])
    assert read_summary(run_dir)["status"] == "completed"
    return run_dir


def test_scontrol_requeue_mid_epoch_resumes_in_the_same_run_dir_bitwise(jobs, reference, read_summary):
    job, run_dir, box = jobs["requeued"]
    fields = _wait_job(job, jobs["deadline"])
    assert fields["JobState"] == "COMPLETED" and fields["Restarts"] == "1", fields
    assert box.get("at_step"), "the job was never requeued mid-epoch"
    # the requeued job found its run (slurm-<job id>), never a fresh timestamped one
    assert [p.name for p in run_dir.parent.iterdir()] == [run_dir.name]
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["slurm"] == {**summary["slurm"], "job_id": job, "requeues": 1}
    assert "resumed from" in (run_dir / "train.log").read_text()
    _same_final_weights(reference, run_dir)
    assert summary["best"] == read_summary(reference)["best"]


def test_a_one_minute_time_limit_requeues_until_the_run_completes_bitwise(jobs, reference, read_summary):
    proc, log, sweep = jobs["timeout"]
    out = _finish(proc, log, jobs["deadline"])
    assert proc.returncode == 0, out[-3000:]
    assert "all 1 jobs completed" in out  # the submitting side waited through the requeues
    summary = read_summary(sweep / "0")
    assert summary["status"] == "completed", summary
    assert summary["slurm"]["requeues"] >= 1, summary["slurm"]  # the limit was reached, and survived
    _same_final_weights(reference, sweep / "0")
    assert summary["best"] == read_summary(reference)["best"]


def test_two_slurm_tasks_train_one_ddp_run_whose_eval_equals_its_summary(jobs, cli, read_summary):
    proc, log, run_dir = jobs["ddp"]
    out = _finish(proc, log, jobs["deadline"])
    assert proc.returncode == 0, out[-3000:]
    assert "all 1 jobs completed" in out and "is in use" not in out
    assert "is in use" not in (run_dir / "train.log").read_text()  # no second rank refused by the run lock
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["devices"] == 2, summary
    assert summary["global_batch_size"] == 64  # 32 per rank x 2 ranks
    assert summary["slurm"]["job_id"] and summary["slurm"]["requeues"] == 0
    assert [p.name for p in run_dir.parent.iterdir() if p.name.isdigit()] == ["0"]  # one run dir, one job
    cli("eval", f"run={run_dir}", "device=cpu")  # one process over the whole val split
    result = json.loads((run_dir / "eval" / "val_best.json").read_text())
    assert result["top1"] == summary["best"]["val_top1"] and result["top5"] == summary["best"]["val_top5"]
    assert result["loss"] == pytest.approx(summary["best"]["val_loss"], rel=1e-5)


def test_two_task_ddp_job_preempted_once_resumes_bitwise(jobs, read_summary):
    uninterrupted = jobs["ddp"][2]
    job, run_dir, box = jobs["ddp_requeued"]
    fields = _wait_job(job, jobs["deadline"])
    assert fields["JobState"] == "COMPLETED" and fields["Restarts"] == "1", fields
    assert box.get("at_step"), "the job was never requeued mid-epoch"
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["devices"] == 2 and summary["slurm"]["requeues"] == 1
    _finish(*jobs["ddp"][:2], jobs["deadline"])
    _same_final_weights(uninterrupted, run_dir)
    assert summary["best"] == read_summary(uninterrupted)["best"]
