"""vitcli on a real one-node SLURM cluster (tests/slurm/cluster.sh): DDP and FSDP from SLURM's own tasks,
and runs that SLURM stops (scontrol requeue, time limits) coming back to finish bitwise equal
to an uninterrupted run, with image files and WebDataset shards decoded by two DataLoader
workers each (SLURM signals every process of a job step, the workers too).

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
# every RNG the loop has (dropout, drop path, MixUp/CutMix, EMA), samples decoded from files by 2 workers;
# 400 steps, over a minute of one idle CPU core (200 took 34 s once): an allocation is still training
# when its one-minute limit comes, however fast the machine is that day
FILES = ["regularization=heavy", "augmentation=mixup_cutmix", "trainer.ema=true", "data.img_size=16",
         "data.batch_size=16", "data.num_workers=2", "trainer.epochs=40"]
# batch 8 per rank: 10 steps an epoch, so the watcher sees a mid-epoch checkpoint however fast the machine
DDP = ["regularization=heavy", "augmentation=mixup_cutmix", "data.num_samples=200", "data.batch_size=8",
       "trainer.epochs=4"]
FSDP = ["regularization=heavy", "augmentation=mixup_cutmix", "data.num_samples=200", "data.batch_size=8",
        "trainer.epochs=3",
        "trainer.ema=true", "trainer.strategy=fsdp"]
LAUNCHER = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=1"]
TIME_LIMIT = 15  # minutes; a job stopped by a time limit gets one of a minute for one allocation
SBATCH_CPU = ["--gpus-per-node=0", "--cpus-per-task=1", f"--time={TIME_LIMIT}", "--mem=1G", "--signal=USR2@15"]
WAIT_S = 1500  # all jobs together; a hang fails instead of blocking CI (they take ~6 min on 2 idle cores)
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}
# what rank 0 logs when the job goes back to SLURM (launch/requeue.py's plan)
BY_SCONTROL = "SLURM requeued the job (preemption or scontrol requeue)"
BY_TIME_LIMIT = ("SIGUSR2 while the job runs", "the job reached its time limit")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "MASTER_PORT")}
    env.update(PYTHONUNBUFFERED="1", WANDB_MODE="offline", **extra)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # srun vitcli ...
    return env


def _vitcli(*args: str, log: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vitcli", *args], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env=_env(**env), cwd=log.parent)


def _sbatch(tmp: Path, *args: str, **env: str) -> str:
    out = subprocess.run(["sbatch", "--parsable", f"--output={tmp}/slurm-%j.out", *args], capture_output=True,
                         text=True, env=_env(**env), cwd=tmp, check=True)
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


def _queued_job(name: str) -> str | None:
    """The id of the job named `name` in the queue (a sweep point: <array job>_<index>)."""
    out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True).stdout.split()
    return out[0] if out else None


def _last(run_dir: Path, tensors: bool = False) -> dict:
    """The run's last checkpoint: last.pt, or the position (and, with `tensors`, the whole tensors:
    model, EMA, optimizer) of a sharded one (trainer.strategy=fsdp)."""
    from vitcli.core.sharded import full_tensors, read_state_json

    sharded = run_dir / "checkpoints" / "last"
    if not sharded.is_dir():
        return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    state = read_state_json(sharded)
    if tensors:
        for key, value in full_tensors(sharded, ("model.", "model_ema.", "optimizer.")).items():
            part, _, name = key.partition(".")
            state.setdefault(part, {})[name] = value
    return state


def _requeue_mid_epoch(run_dir: Path, job: str, box: dict) -> None:
    """`scontrol requeue` the job once its run has a mid-epoch checkpoint after the first epoch."""
    end = time.time() + WAIT_S
    while time.time() < end and not box.get("done"):
        try:
            state = _last(run_dir)
        except Exception:  # not there yet, or being replaced
            time.sleep(0.2)
            continue
        if state["epoch"] >= 1 and state["batch_in_epoch"] > 0:
            box["at_step"] = state["global_step"]
            subprocess.run(["scontrol", "requeue", job], check=True, capture_output=True)
            return
        time.sleep(0.2)


def _stop_twice(run_dir: Path, job: str | None, box: dict, name: str = "") -> None:
    """Stop the job (or the job named `name`) twice while it trains past its first epoch: first
    `scontrol requeue` (what preemption does), then, in its next allocation, a one-minute time
    limit (SLURM warns 15 s or so before it, and vitcli requeues the job); once that stop is
    through, the limit goes back up, so the job finishes whatever the machine's load."""
    last, end, previous = run_dir / "checkpoints" / "last.pt", time.time() + WAIT_S, None
    while time.time() < end and not box.get("done"):
        time.sleep(0.2)
        job = job or _queued_job(name)
        fields = _job(job) if job else {}
        restarts = int(fields.get("Restarts") or 0)
        if "limited_at" in box:
            if restarts >= 2:
                subprocess.run(["scontrol", "update", f"JobId={job}", f"TimeLimit={TIME_LIMIT}"], check=True)
                return
            continue
        try:
            state = torch.load(last, weights_only=True)
        except Exception:  # not there yet, or being replaced
            continue
        moving, previous = previous is not None and state["global_step"] != previous, state["global_step"]
        if not (moving and fields.get("JobState") == "RUNNING" and state["epoch"] >= 1 and state["batch_in_epoch"]):
            continue  # a checkpoint that is not moving may be one a previous allocation left
        if "requeued_at" not in box:
            if subprocess.run(["scontrol", "requeue", job], capture_output=True).returncode == 0:
                box["requeued_at"] = state["global_step"]
        elif restarts >= 1 and subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=1"],
                                              capture_output=True).returncode == 0:
            box["limited_at"] = state["global_step"]


def _write_data(tmp: Path) -> dict[str, list[str]]:
    """scikit-learn's digits (16 px, 20 per class) as an image folder and as WebDataset shards of 40
    samples (webdataset's ShardWriter; short lower-case keys), listed in the folder's order, so a run
    on either decodes the same pixels in the same order and trains bitwise alike."""
    from data_builders import digits_images, split_indices, write_folder, write_shards

    images, labels, names = digits_images(16, per_class=20)
    splits = split_indices(labels)
    ordered = {k: sorted(v, key=lambda i: (names[labels[i]], i)) for k, v in splits.items()}
    folder = write_folder(tmp / "folder", images, labels, names, splits)
    shards = write_shards(tmp / "shards", images, labels, names, ordered, per_shard=40)
    cache = f"data.cache_dir={tmp / 'cache'}"
    # data.format=files: 16 px files at img_size 16 would otherwise be held in memory (data.format=auto)
    return {"folder": ["data=imagefolder", f"data.root={folder}", cache, "data.format=files"],
            "shards": ["data=wds", f"data.root={shards}", cache]}


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
    data = _write_data(tmp)
    model = [o for o in tiny_overrides if not o.startswith(("data.", "data="))]
    folder, shards = ([*model, *ONE_THREAD, *FILES, *data[k]] for k in ("folder", "shards"))
    ddp = [*tiny_overrides, *ONE_THREAD, *DDP]
    runs_root = f"runs_root={tmp}/runs"
    started: dict = {"deadline": time.time() + WAIT_S}
    # (a) the plain sbatch script on image files, requeued with scontrol mid-epoch, then stopped by a time limit
    job = _sbatch(tmp, *SBATCH_CPU, "--ntasks-per-node=1", str(SBATCH), *folder, runs_root, "name=files")
    run_dir = tmp / "runs" / "files" / f"slurm-{job}"
    started["files"] = (job, run_dir, {})
    threading.Thread(target=_stop_twice, args=(run_dir, job, started["files"][2]), daemon=True).start()
    # (b) a sweep point on shards through hydra/launcher=slurm, stopped the same two ways
    log = tmp / "shards.log"
    started["shards"] = (_vitcli("train", "-m", *LAUNCHER, f"hydra.launcher.timeout_min={TIME_LIMIT}", *shards,
                                 runs_root, "name=shards", "hydra.launcher.name=shards",
                                 f"hydra.sweep.dir={tmp}/shards_sweep", log=log), log, tmp / "shards_sweep", {})
    threading.Thread(target=_stop_twice, args=(tmp / "shards_sweep" / "0", None, started["shards"][3], "shards"),
                     daemon=True).start()
    # the uninterrupted single-process reference of both, outside SLURM
    log = tmp / "reference.log"
    started["reference"] = (_vitcli("train", *folder, f"hydra.run.dir={tmp}/reference", log=log), log,
                            tmp / "reference")
    _wait_submitted("shards", time.time() + 180)
    # DDP: two SLURM tasks of a submitit job meeting on a port of their own (no SLURM port reserved;
    # the reference of (c)), and (c) the sbatch script's two tasks on SLURM's reserved port, under
    # `srun -K` (a task that exits non-zero gets the others killed)
    log = tmp / "ddp.log"
    started["ddp"] = (_vitcli("train", "-m", *LAUNCHER, "hydra.launcher.tasks_per_node=2",
                              "hydra.launcher.timeout_min=10", *ddp, runs_root, "name=ddp",
                              f"hydra.sweep.dir={tmp}/ddp_sweep", log=log, SLURM_RESV_PORTS="0",
                              MASTER_PORT="29500"), log, tmp / "ddp_sweep" / "0")
    job = _sbatch(tmp, *SBATCH_CPU, "--ntasks-per-node=2", str(SBATCH), *ddp, runs_root, "name=ddp_requeued",
                  SLURM_KILL_BAD_EXIT="1")
    run_dir = tmp / "runs" / "ddp_requeued" / f"slurm-{job}"
    started["ddp_requeued"] = (job, run_dir, {}, tmp / f"slurm-{job}.out")
    threading.Thread(target=_requeue_mid_epoch, args=(run_dir, job, started["ddp_requeued"][2]), daemon=True).start()
    # (d) FSDP: the sbatch script's two tasks shard the model, requeued once mid-epoch; its uninterrupted
    # reference is two torchrun ranks outside SLURM
    fsdp = [*tiny_overrides, *ONE_THREAD, *FSDP]
    job = _sbatch(tmp, *SBATCH_CPU, "--ntasks-per-node=2", str(SBATCH), *fsdp, runs_root, "name=fsdp_requeued",
                  SLURM_KILL_BAD_EXIT="1")
    run_dir = tmp / "runs" / "fsdp_requeued" / f"slurm-{job}"
    started["fsdp_requeued"] = (job, run_dir, {}, tmp / f"slurm-{job}.out")
    threading.Thread(target=_requeue_mid_epoch, args=(run_dir, job, started["fsdp_requeued"][2]), daemon=True).start()
    log = tmp / "fsdp_reference.log"
    started["fsdp_reference"] = (_vitcli("train", *fsdp, "trainer.devices=2", f"hydra.run.dir={tmp}/fsdp_reference",
                                         log=log), log, tmp / "fsdp_reference")
    yield started
    for box in (started["files"][2], started["shards"][3], started["ddp_requeued"][2], started["fsdp_requeued"][2]):
        box["done"] = True
    subprocess.run(["scancel", "--quiet", started["files"][0], started["ddp_requeued"][0],
                    started["fsdp_requeued"][0]])
    subprocess.run(["scancel", "--quiet", "-n", "shards,ddp"])
    for key in ("shards", "reference", "ddp", "fsdp_reference"):
        started[key][0].kill()


def _same_final_weights(a: Path, b: Path) -> None:
    ref, res = _last(a, tensors=True), _last(b, tensors=True)
    assert ref["global_step"] == res["global_step"]
    for key in ("model", "model_ema", "optimizer"):
        if key not in ref:
            continue
        left, right = ref[key], res[key]
        if key == "optimizer" and "state" in left:  # last.pt: by parameter index (sharded: flat names already)
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


def _stops(log: str) -> tuple[int, int]:
    """How often the run went back to SLURM: requeued by SLURM (scontrol), and by vitcli for the time limit."""
    return log.count(BY_SCONTROL), sum(log.count(why) for why in BY_TIME_LIMIT)


def test_image_files_requeued_mid_epoch_and_stopped_by_the_time_limit_resume_bitwise(jobs, reference, read_summary):
    job, run_dir, box = jobs["files"]
    fields = _wait_job(job, jobs["deadline"])
    assert fields["JobState"] == "COMPLETED", fields
    assert "requeued_at" in box and "limited_at" in box, box
    # the requeued job found its run (slurm-<job id>), never a fresh timestamped one
    assert [p.name for p in run_dir.parent.iterdir()] == [run_dir.name]
    log = (run_dir / "train.log").read_text()
    by_scontrol, by_limit = _stops(log)
    assert (by_scontrol, by_limit) == (1, 1)  # the DataLoader workers survived both
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["slurm"]["job_id"] == job
    assert summary["slurm"]["requeues"] == int(fields["Restarts"]) == 2
    assert "resumed from" in log and "killed by signal" not in log
    _same_final_weights(reference, run_dir)
    assert summary["best"] == read_summary(reference)["best"]


def test_shards_requeued_mid_epoch_and_stopped_by_the_time_limit_through_the_launcher_resume_bitwise(
        jobs, reference, read_summary):
    proc, log, sweep, box = jobs["shards"]
    out = _finish(proc, log, jobs["deadline"])
    assert proc.returncode == 0, out[-3000:]
    assert "all 1 jobs completed" in out  # the submitting side waited through the requeues
    assert "requeued_at" in box and "limited_at" in box, box
    train_log = (sweep / "0" / "train.log").read_text()
    by_scontrol, by_limit = _stops(train_log)
    assert (by_scontrol, by_limit) == (1, 1)
    summary = read_summary(sweep / "0")
    assert summary["status"] == "completed", summary
    assert summary["slurm"]["requeues"] == 2, summary["slurm"]
    _same_final_weights(reference, sweep / "0")
    assert summary["best"] == read_summary(reference)["best"]


def test_two_slurm_tasks_train_one_ddp_run_whose_eval_equals_its_summary(jobs, cli, read_summary):
    proc, log, run_dir = jobs["ddp"]
    out = _finish(proc, log, jobs["deadline"])
    assert proc.returncode == 0, out[-3000:]
    assert "all 1 jobs completed" in out and "is in use" not in out
    train_log = (run_dir / "train.log").read_text()
    assert "is in use" not in train_log  # no second rank refused by the run lock
    # no port reserved by SLURM: the tasks met on one of their job's own, not on the submitting shell's
    assert "MASTER_PORT=29500 in the environment is not used" in train_log and "(derived)" in train_log
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["devices"] == 2, summary
    assert summary["global_batch_size"] == 16  # 8 per rank x 2 ranks
    assert summary["slurm"]["job_id"] and summary["slurm"]["requeues"] == 0
    assert [p.name for p in run_dir.parent.iterdir() if p.name.isdigit()] == ["0"]  # one run dir, one job
    cli("eval", f"run={run_dir}", "device=cpu")  # one process over the whole val split
    result = json.loads((run_dir / "eval" / "val_best.json").read_text())
    assert result["top1"] == summary["best"]["val_top1"] and result["top5"] == summary["best"]["val_top5"]
    assert result["loss"] == pytest.approx(summary["best"]["val_loss"], rel=1e-5)


def test_two_task_ddp_job_preempted_once_resumes_bitwise(jobs, read_summary):
    uninterrupted = jobs["ddp"][2]
    job, run_dir, box, job_log = jobs["ddp_requeued"]
    fields = _wait_job(job, jobs["deadline"])
    assert fields["JobState"] == "COMPLETED" and fields["Restarts"] == "1", fields
    assert box.get("at_step"), "the job was never requeued mid-epoch"
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["devices"] == 2 and summary["slurm"]["requeues"] == 1
    log = (run_dir / "train.log").read_text()
    assert log.count(BY_SCONTROL) == 1
    assert "(SLURM_STEP_RESV_PORTS)" in log  # the port SLURM reserved for the step (MpiParams=ports)
    # every rank left with status 0 once rank 0 had saved (srun -K kills the rest when one fails)
    assert "Exited with exit code" not in job_log.read_text()
    _finish(*jobs["ddp"][:2], jobs["deadline"])
    _same_final_weights(uninterrupted, run_dir)
    assert summary["best"] == read_summary(uninterrupted)["best"]


def test_two_task_fsdp_job_preempted_once_resumes_bitwise(jobs, read_summary):
    """FSDP from SLURM's tasks: every task writes its shards, the requeued job resumes them and ends
    bitwise equal to the same two ranks uninterrupted (model, EMA and optimizer state)."""
    job, run_dir, box, job_log = jobs["fsdp_requeued"]
    fields = _wait_job(job, jobs["deadline"])
    assert fields["JobState"] == "COMPLETED" and fields["Restarts"] == "1", fields
    assert box.get("at_step"), "the job was never requeued mid-epoch"
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["devices"] == 2 and summary["slurm"]["requeues"] == 1
    assert (run_dir / "checkpoints" / "last").is_symlink()  # sharded, one file per task
    assert len(list((run_dir / "checkpoints" / "last").glob("shard-*.safetensors"))) == 2
    log = (run_dir / "train.log").read_text()
    assert log.count(BY_SCONTROL) == 1 and "resumed from" in log
    assert "Exited with exit code" not in job_log.read_text()
    proc, ref_log, reference = jobs["fsdp_reference"]
    out = _finish(proc, ref_log, jobs["deadline"])
    assert proc.returncode == 0, out[-3000:]
    _same_final_weights(reference, run_dir)
    assert summary["best"] == read_summary(reference)["best"]
