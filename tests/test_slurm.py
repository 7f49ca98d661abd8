"""SLURM without a cluster: srun's environment -> DDP ranks, and what a stopped run asks of SLURM
(the job's state as scontrol reports it). The real cluster tests live in tests/slurm/."""

from __future__ import annotations

import os
import signal

import pytest
from processes import rank_pid

from vitcli.launch import requeue, slurm


def _srun_env(procid: int, nodes: int = 2, per_node: int = 2, job: str = "4242") -> dict[str, str]:
    """What srun sets for task `procid` of `srun --nodes=<nodes> --ntasks-per-node=<per_node>` (block layout)."""
    return {
        "SLURM_JOB_ID": job, "SLURM_STEP_ID": "0", "SLURM_PROCID": str(procid),
        "SLURM_LOCALID": str(procid % per_node), "SLURM_NODEID": str(procid // per_node),
        "SLURM_NTASKS": str(nodes * per_node), "SLURM_STEP_NUM_TASKS": str(nodes * per_node),
        "SLURM_STEP_NUM_NODES": str(nodes), "SLURM_STEP_TASKS_PER_NODE": f"{per_node}(x{nodes})",
        "SLURM_STEP_NODELIST": "gpu-[07-08]", "SLURM_JOB_NODELIST": "gpu-[07-08]",
    }


def test_srun_tasks_are_the_ranks_of_one_run():
    tasks = [slurm.step_task(_srun_env(p)) for p in range(4)]
    assert [t.rank for t in tasks] == [0, 1, 2, 3]
    assert [t.local_rank for t in tasks] == [0, 1, 0, 1]
    assert [t.node_rank for t in tasks] == [0, 0, 1, 1]
    assert {(t.world_size, t.local_world_size, t.num_nodes) for t in tasks} == {(4, 2, 2)}
    assert {(t.master_addr, t.master_port) for t in tasks} == {("gpu-07", tasks[0].master_port)}
    uneven = slurm.step_task({**_srun_env(2, nodes=2, per_node=2), "SLURM_STEP_TASKS_PER_NODE": "2,1",
                              "SLURM_STEP_NUM_TASKS": "3"})
    assert (uneven.world_size, uneven.local_world_size) == (3, 1)


def test_join_exports_torchrun_variables_only_for_a_multi_task_step():
    env = _srun_env(3)
    task = slurm.join_tasks_as_ranks(env)
    assert task is not None
    assert {k: env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR")} == \
        {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "gpu-07"}
    assert env["MASTER_PORT"] == str(task.master_port)
    # torchrun inside an srun task already set the rank: leave it
    under_torchrun = {**_srun_env(1), "RANK": "5", "WORLD_SIZE": "8"}
    assert slurm.join_tasks_as_ranks(under_torchrun) is None and under_torchrun["RANK"] == "5"
    # a batch script with --ntasks=4 (no srun step) or a one-task step is one process
    batch = {k: v for k, v in _srun_env(0).items() if not k.startswith("SLURM_STEP")}
    assert slurm.join_tasks_as_ranks(batch) is None and "RANK" not in batch
    single = {**_srun_env(0), "SLURM_STEP_NUM_TASKS": "1"}
    assert slurm.join_tasks_as_ranks(single) is None and "RANK" not in single
    assert slurm.join_tasks_as_ranks({}) is None


def _ephemeral_low() -> int:
    try:
        return int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except OSError:
        return 32768  # Linux's default


def test_the_master_port_is_reserved_by_slurm_chosen_for_the_job_or_derived_below_the_ephemeral_range():
    derived = [slurm.step_task(_srun_env(p)) for p in range(4)]
    assert {(t.master_port, t.port_source) for t in derived} == {(derived[0].master_port, slurm.DERIVED)}
    candidates = slurm.candidate_ports(_srun_env(0))
    assert derived[0].master_port == candidates[0] and len(set(candidates)) == len(candidates) >= 4
    assert all(20000 <= p < min(32768, _ephemeral_low()) for p in candidates)  # never where the kernel picks
    # another job, another step, the same job after a requeue: other ports (a stale socket is never met)
    others = [slurm.candidate_ports(env) for env in (_srun_env(0, job="4243"), {**_srun_env(0), "SLURM_STEP_ID": "1"},
                                                     {**_srun_env(0), "SLURM_RESTART_COUNT": "1"})]
    assert all(o[0] != candidates[0] for o in others)
    # srun --resv-ports: SLURM's own port for the step, on every task
    reserved = [slurm.step_task({**_srun_env(p), "SLURM_STEP_RESV_PORTS": "12001-12004"}) for p in range(4)]
    assert {(t.master_port, t.port_source) for t in reserved} == {(12001, "SLURM_STEP_RESV_PORTS")}
    # the submitting shell's MASTER_PORT (sbatch exports it to every job) is not used; VITCLI_MASTER_PORT is
    env = {**_srun_env(0), "MASTER_PORT": "29500"}
    task = slurm.join_tasks_as_ranks(env)
    assert task.master_port == candidates[0] and env["MASTER_PORT"] == str(candidates[0])
    chosen = slurm.step_task({**_srun_env(1), "MASTER_PORT": "29500", "VITCLI_MASTER_PORT": "29511"})
    assert (chosen.master_port, chosen.port_source) == (29511, "VITCLI_MASTER_PORT")
    from vitcli.core.errors import UserError

    with pytest.raises(UserError, match="VITCLI_MASTER_PORT=70000 is not a port number"):
        slurm.step_task({**_srun_env(0), "VITCLI_MASTER_PORT": "70000"})


def test_the_tasks_of_a_step_meet_past_a_port_another_program_holds(monkeypatch):
    """Rank 0 listens on the first candidate it can bind; the others find it there (a real
    TCPStore per rank, in threads), even when a silent program holds the first candidate."""
    import datetime
    import socket
    import threading

    from vitcli.launch import comm

    env = {**_srun_env(0, nodes=1, per_node=2), "SLURM_STEP_NODELIST": "127.0.0.1", "SLURM_JOB_NODELIST": "127.0.0.1"}
    monkeypatch.setenv("MASTER_PORT", "")  # the ranks export the port they met on
    first = slurm.candidate_ports(env)[0]
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        squatter.bind(("", first))
    except OSError:
        pytest.skip(f"port {first} is in use here already")
    squatter.listen(4)  # accepts connections and never answers
    stores, errors = {}, []

    met = threading.Barrier(2)

    def rank(r: int) -> None:
        try:
            task = slurm.step_task({**env, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)})
            with comm.step_store(task, timeout=datetime.timedelta(seconds=60), probe_s=1.0, env=env) as store:
                stores[r] = store
                met.wait(timeout=60)  # rank 0 answers until the step has met
        except Exception as err:  # noqa: BLE001  (reported below)
            errors.append(err)
            met.abort()

    threads = [threading.Thread(target=rank, args=(r,)) for r in (1, 0)]  # rank 1 looks before rank 0 listens
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        squatter.close()
    assert not errors and not any(t.is_alive() for t in threads), errors
    assert stores[0].port == stores[1].port
    stores[1].set("hello", "from rank 1")
    assert stores[0].get("hello") == b"from rank 1"
    assert os.environ["MASTER_PORT"] == str(slurm.candidate_ports(env)[1])  # met past the held port


@pytest.mark.parametrize("nodelist, first", [("node1", "node1"), ("gpu[007-009,012],cpu1", "gpu007"),
                                             ("a-[3,5]", "a-3"), ("n1,n2", "n1")])
def test_first_host_of_a_node_list(nodelist, first):
    assert slurm.first_host(nodelist) == first


def test_tasks_per_node_expands_repeats():
    assert slurm.tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    assert slurm.tasks_per_node("4") == [4]


def _job(**fields) -> dict[str, str]:
    base = {"JobState": "RUNNING", "Reason": "None", "Restarts": "0", "Requeue": "1", "BatchFlag": "1"}
    return {**base, **fields}


@pytest.mark.parametrize("signum, fields, env_restarts, status, here, requeues", [
    # scontrol requeue / preemption: SLURM counted the restart before the signal came
    (signal.SIGTERM, _job(JobState="COMPLETING", Restarts="1"), 0, "requeued", False, 1),
    (signal.SIGTERM, _job(JobState="COMPLETING", Restarts="3"), 2, "requeued", False, 3),
    # the time limit itself, and SLURM's warning before it: vitcli requeues
    (signal.SIGTERM, _job(JobState="COMPLETING", Reason="TimeLimit"), 0, "requeued", True, 1),
    (signal.SIGUSR2, _job(), 1, "requeued", True, 2),
    # scancel, Ctrl-C through srun, jobs SLURM cannot requeue
    (signal.SIGTERM, _job(JobState="COMPLETING"), 0, "interrupted", False, 0),
    (signal.SIGTERM, _job(JobState="CANCELLED"), 0, "interrupted", False, 0),
    (signal.SIGINT, _job(), 0, "interrupted", False, 0),
    (signal.SIGUSR2, _job(Requeue="0"), 0, "interrupted", False, 0),
    (signal.SIGUSR2, _job(BatchFlag="0"), 0, "interrupted", False, 0),
])
def test_stop_plan_follows_the_jobs_state(signum, fields, env_restarts, status, here, requeues):
    env = {"SLURM_JOB_ID": "77", "SLURM_RESTART_COUNT": str(env_restarts)}
    asked = []
    plan = requeue.plan_stop(signum, env, show=lambda job: asked.append(job) or fields)
    assert (plan.status, plan.requeue_here, plan.requeues) == (status, here, requeues)
    assert asked in ([], ["77"])


def test_stop_outside_slurm_is_an_interrupt():
    plan = requeue.plan_stop(signal.SIGTERM, {}, show=lambda job: pytest.fail("no scontrol outside SLURM"))
    assert plan.status == "interrupted" and not plan.requeue_here
    assert slurm.summary_fields(env={}) == {}


def _vote_in_threads(flag_at: dict[int, tuple[int, int]], steps: int = 8, settle_at_end: bool = False):
    """Two gloo ranks in two threads of this process; rank r's own flag rises at step flag_at[r][0]
    with signal flag_at[r][1]. Returns {rank: (step it stopped at, agreed signal)}."""
    import datetime
    import threading

    import torch.distributed as torch_dist

    from vitcli.launch.interrupts import StopVote

    store, out = torch_dist.HashStore(), {}

    def rank(r: int) -> None:
        group = torch_dist.ProcessGroupGloo(torch_dist.PrefixStore("vote", store), r, 2, datetime.timedelta(seconds=20))
        step = [0]
        at, sig = flag_at.get(r, (10**9, 0))
        vote = StopVote(group, local=lambda: sig if step[0] >= at else None)
        for step[0] in range(steps):
            if vote.poll():
                out[r] = (step[0], vote.signum)
                return
        out[r] = ("end", vote.settle() if settle_at_end else None)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a rank hangs in the vote"
    return out


def test_a_signal_on_one_rank_stops_every_rank_at_the_same_step():
    # rank 1 alone is signalled at its step 3: both ranks stop at step 4, for USR2
    assert _vote_in_threads({1: (3, signal.SIGUSR2)}) == {0: (4, signal.SIGUSR2), 1: (4, signal.SIGUSR2)}
    # different signals at different steps: the first step anyone asked, one agreed signal
    out = _vote_in_threads({0: (5, signal.SIGTERM), 1: (2, signal.SIGUSR2)})
    assert out[0] == out[1] and out[0][0] == 3
    # nobody signalled: nobody stops; a flag raised in the last step is agreed at the epoch end
    assert _vote_in_threads({}) == {0: ("end", None), 1: ("end", None)}
    assert _vote_in_threads({0: (7, signal.SIGINT)}, settle_at_end=True) == \
        {0: ("end", signal.SIGINT), 1: ("end", signal.SIGINT)}


def test_the_vote_of_one_process_is_its_own_flag():
    from vitcli.launch.interrupts import StopVote

    flag = [None]
    vote = StopVote(local=lambda: flag[0])
    assert vote.poll() is None and vote.settle() is None
    flag[0] = signal.SIGTERM
    assert vote.poll() == signal.SIGTERM
    flag[0] = None
    assert vote.poll() == signal.SIGTERM  # a stop, once agreed, stays


def _summary(status: str, **extra) -> dict:
    return {"status": status, "experiment": "exp", "model": "vit_t", "data": "digits", "epochs": 5,
            "epochs_completed": 2, "best": {"epoch": 2, "val_top1": 50.0}, "wall_time_s": 3.0, **extra}


def test_runs_table_shows_the_slurm_job_its_state_and_requeues(fake_run, tmp_path, capsys, monkeypatch):
    from omegaconf import OmegaConf

    from vitcli.commands.runs import list_runs
    from vitcli.core.task_schemas import RunsConfig

    asked = []
    monkeypatch.setattr(slurm, "queue_states", lambda jobs: asked.append(jobs) or {"4242": "PENDING"})
    logs = ["/shared/slurm-4242.out"]
    fake_run(tmp_path / "a", summary=_summary("requeued", slurm={"job_id": "4242", "requeues": 2, "logs": logs}))
    fake_run(tmp_path / "b", summary=_summary("completed", slurm={"job_id": "17", "requeues": 0, "logs": logs}))
    fake_run(tmp_path / "c", summary=_summary("completed"))
    rows = list_runs(OmegaConf.merge(OmegaConf.structured(RunsConfig), {"root": str(tmp_path), "sort": "run"}))
    out = capsys.readouterr().out
    assert "job 4242 PENDING, requeued 2x" in out and "job 17" in out
    assert asked == [["4242"]]  # only runs that may still be in the queue are asked about
    assert [r["slurm"] and r["slurm"]["job_id"] for r in rows] == ["4242", "17", None]
    fake_run(tmp_path / "d", summary=_summary("completed"))
    list_runs(OmegaConf.merge(OmegaConf.structured(RunsConfig), {"root": str(tmp_path / "c")}))
    assert "slurm" not in capsys.readouterr().out  # no column when no run came from SLURM


def test_a_failed_sweep_job_names_its_slurm_logs(fake_run, tmp_path):
    from vitcli.search.sweep import collect

    logs = ["/sweep/.submitit/12_0/12_0_0_log.out", "/sweep/.submitit/12_0/12_0_0_log.err"]
    fake_run(tmp_path / "0", summary=_summary("failed", error="CUDA out of memory",
                                                slurm={"job_id": "12_0", "requeues": 0, "logs": logs}))
    fake_run(tmp_path / "1", summary=_summary("completed", slurm={"job_id": "12_1", "requeues": 1, "logs": logs}))
    rows, _ = collect(tmp_path)
    assert rows[0]["error"] == f"CUDA out of memory; logs: {' '.join(logs)}"
    assert rows[1]["error"] == ""


DDP_SIGNAL = ["trainer.devices=2", "trainer.device=cpu", "trainer.threads=1", "trainer.ckpt_interval_steps=1",
              "regularization=heavy", "augmentation=mixup_cutmix", "data.num_samples=200", "trainer.epochs=3",
              "trainer.ema=true", "data.eval_batch_size=4"]


@pytest.fixture(scope="module")
def ddp_reference(train_tiny, tmp_path_factory):
    """The uninterrupted 2-rank run the stopped ones must end equal to."""
    run_dir = tmp_path_factory.mktemp("ddp_signal") / "reference"
    train_tiny(run_dir, *DDP_SIGNAL)
    return run_dir


def _same_as_reference(reference, run_dir, read_summary) -> None:
    import torch

    ref, res = (torch.load(d / "checkpoints" / "last.pt", weights_only=True) for d in (reference, run_dir))
    mismatched = [k for k in ref["model"] if not torch.equal(ref["model"][k], res["model"][k])]
    assert not mismatched, mismatched[:5]
    assert read_summary(run_dir)["best"] == read_summary(reference)["best"]


@pytest.mark.slow
def test_a_signal_to_one_ddp_rank_stops_both_saves_once_and_resumes_bitwise(tiny_overrides, train_tiny, read_summary,
                                                                           tmp_path, ddp_reference):
    import os
    import subprocess
    import sys
    import time

    import torch

    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "vitcli", "train", *tiny_overrides, *DDP_SIGNAL, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    last, sent = run_dir / "checkpoints" / "last.pt", None
    while proc.poll() is None and sent is None:
        try:
            state = torch.load(last, weights_only=True)
        except Exception:
            state = {"epoch": 0}
        # mid epoch 1 with a whole epoch after it: a busy machine polls late, and a signal after the
        # last step's stop vote would find nothing left to stop
        if state["epoch"] == 1 and state["batch_in_epoch"] > 0 and (pid := rank_pid(proc.pid, "1")):
            os.kill(pid, signal.SIGUSR2)  # rank 1 alone is signalled
            sent = state["global_step"]
        time.sleep(0.05)
    _, stderr = proc.communicate(timeout=300)
    assert sent is not None, "the run ended before rank 1 could be signalled"
    assert proc.returncode == 128 + signal.SIGUSR2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]  # one line, from the parent
    assert len(lines) == 1 and lines[0].startswith("vitcli: interrupted by SIGUSR2 at step "), stderr
    assert lines[0].endswith(f"resume with: vitcli train resume={run_dir}")
    summary = read_summary(run_dir)
    saved = torch.load(last, weights_only=True)
    assert summary["status"] == "interrupted" and saved["global_step"] == summary["global_step"]
    assert len(saved["rank_rngs"]) == 2  # each rank resumes its own RNG

    proc = train_tiny(run_dir, *DDP_SIGNAL)  # the same command again: resumes
    assert "resumed from" in proc.stdout + (run_dir / "train.log").read_text()
    _same_as_reference(ddp_reference, run_dir, read_summary)


@pytest.mark.slow
def test_a_signal_to_one_ddp_rank_during_evaluation_ends_it_on_both(train_tiny, read_summary, tmp_path,
                                                                    ddp_reference):
    """Rank 1 alone is signalled at its second evaluation batch of epoch 2: both ranks end the
    evaluation at the same batch (one vote per batch), rank 0 saves the state after the epoch's
    training, and the rerun evaluates epoch 2 again and ends as the uninterrupted run."""
    import torch

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, signal\n"
        "if os.environ.get('RANK') == '1':\n"
        "    import vitcli.engine.trainer as t\n"
        "    real, calls = t.evaluate, []\n"
        "    def evaluate(model, loader, runtime, **kw):\n"
        "        calls.append(1)\n"
        "        def batches(n=len(calls)):\n"
        "            for i, b in enumerate(loader):\n"
        "                if n == 3 and i == 1:\n"  # epoch 2's evaluation (raw, then EMA: 2 per epoch)
        "                    os.kill(os.getpid(), signal.SIGUSR2)\n"
        "                yield b\n"
        "        return real(model, batches(), runtime, **kw)\n"
        "    t.evaluate = evaluate\n"
    )
    run_dir = tmp_path / "run"
    env = {"PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])}
    proc = train_tiny(run_dir, *DDP_SIGNAL, env=env, check=False)
    assert proc.returncode == 128 + signal.SIGUSR2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vitcli: interrupted by SIGUSR2 at step "), proc.stderr
    saved = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    reference = torch.load(ddp_reference / "checkpoints" / "last.pt", weights_only=True)
    steps_per_epoch = reference["global_step"] // 3
    # the state after epoch 2's training, before its evaluation
    assert (saved["epoch"], saved["batch_in_epoch"], saved["global_step"]) == (1, steps_per_epoch, 2 * steps_per_epoch)
    summary = read_summary(run_dir)
    assert summary["status"] == "interrupted" and summary["epochs_completed"] == 1

    train_tiny(run_dir, *DDP_SIGNAL)  # the same command again: evaluates epoch 2, trains epoch 3
    _same_as_reference(ddp_reference, run_dir, read_summary)


@pytest.mark.parametrize("env, stamp", [
    ({"SLURM_JOB_ID": "4242", "SLURM_PROCID": "0"}, "slurm-4242"),  # the batch script, or srun's step 0
    ({"SLURM_JOB_ID": "4242", "SLURM_PROCID": "1", "SLURM_STEP_ID": "0"}, "slurm-4242"),
    ({"SLURM_JOB_ID": "4242", "SLURM_PROCID": "0", "SLURM_STEP_ID": "2"}, "slurm-4242.2"),  # a later srun
    ({"SLURM_JOB_ID": "4250", "SLURM_PROCID": "0", "SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": "7"},
     "slurm-4242_7"),
])
def test_a_run_in_a_slurm_job_is_named_by_the_job_so_a_requeue_finds_it(compose, monkeypatch, env, stamp):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = compose("train", ["name=exp"], return_hydra_config=True)
    assert cfg.hydra.run.dir == f"runs/exp/{stamp}"


@pytest.mark.parametrize("env", [{}, {"SLURM_JOB_ID": "4242"}], ids=["no SLURM", "salloc shell"])
def test_outside_a_slurm_task_a_run_dir_is_a_timestamp(compose, monkeypatch, env):
    import re

    for key in ("SLURM_JOB_ID", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = compose("train", ["name=exp"], return_hydra_config=True)
    assert re.fullmatch(r"runs/exp/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", cfg.hydra.run.dir)


def test_a_run_dir_is_resumed_only_by_the_config_that_wrote_it(tmp_path):
    from vitcli.core.errors import UserError
    from vitcli.launch.runlock import check_one_run

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "config.yaml").write_text("model:\n  name: vit_t\noptimizer:\n  lr: 0.001\n")
    check_one_run(tmp_path, "model:\n  name: vit_t\noptimizer:\n  lr: 0.002\n")  # no last.pt: nothing to resume
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"")
    check_one_run(tmp_path, "model:\n  name: vit_t\noptimizer:\n  lr: 0.001\n")  # the same run: resumes
    with pytest.raises(UserError, match=r"optimizer.lr: 0.001 there, 0.002 now\); continue it with `vitcli train "
                                        r"resume="):
        check_one_run(tmp_path, "model:\n  name: vit_t\noptimizer:\n  lr: 0.002\n")
    # a setting vitcli gained after the run was written (absent there) is no change; the command's own
    # data check is not the run's; a setting the run had and lost still is
    check_one_run(tmp_path, "model:\n  name: vit_t\noptimizer:\n  lr: 0.001\nlogger:\n  backends:\n    mlflow: false\n"
                            "data_check: warn\n")
    with pytest.raises(UserError, match=r"optimizer.lr: 0.001 there, None now"):
        check_one_run(tmp_path, "model:\n  name: vit_t\n")


def test_the_submitting_side_waits_through_requeues_and_gives_up_on_jobs_slurm_ended(tmp_path, monkeypatch):
    from types import SimpleNamespace

    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from vitcli.launch import slurm_launcher

    def job(job_id: str):
        return SimpleNamespace(job_id=job_id, paths=SimpleNamespace(result_pickle=tmp_path / f"{job_id}.pkl"))

    done, requeued, killed = job("7_0"), job("7_1"), job("7_2")
    # what squeue says at each poll: 7_1 is requeued (PENDING) and writes its result later;
    # 7_2 was killed outside Python (no result); 7_0 finished at once
    polls = iter([{"7_1": "RUNNING", "7_2": "RUNNING"}, {"7_1": "PENDING", "7_2": "OUT_OF_MEMORY"},
                  None, {"7_1": "PENDING"}, {"7_1": "RUNNING"}])
    done.paths.result_pickle.write_bytes(b"")
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += 10
        if clock[0] == 40:
            requeued.paths.result_pickle.write_bytes(b"")

    monkeypatch.setattr(slurm_launcher, "queue_states", lambda ids: next(polls, {}))
    monkeypatch.setattr(slurm_launcher.time, "sleep", sleep)
    monkeypatch.setattr(slurm_launcher.time, "time", lambda: clock[0])
    monkeypatch.setattr(slurm_launcher, "RESULT_GRACE_S", 15)
    states = slurm_launcher.wait_for_jobs([done, requeued, killed])
    assert states["7_2"] == "OUT_OF_MEMORY" and states["7_1"] in ("PENDING", "RUNNING")
    assert clock[0] == 40  # waited until the requeued job's result came, past the killed job's grace


def test_a_sweep_point_that_failed_before_training_gets_its_job_logs(fake_run, read_summary, tmp_path):
    from types import SimpleNamespace

    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from vitcli.launch.slurm_launcher import name_logs

    job = SimpleNamespace(job_id="7_3", paths=SimpleNamespace(stdout=tmp_path / "7_3_0_log.out",
                                                              stderr=tmp_path / "7_3_0_log.err"))
    failed = fake_run(tmp_path / "3", summary=_summary("failed", error="bad override"))
    completed = fake_run(tmp_path / "4", summary=_summary("completed"))
    name_logs(failed, job)
    name_logs(completed, job)
    assert read_summary(failed)["slurm"]["logs"] == [str(job.paths.stdout), str(job.paths.stderr)]
    assert "slurm" not in read_summary(completed)


@pytest.mark.parametrize("srun, visible, gpu", [
    # srun --ntasks-per-node=4 --gpus-per-task=1: SLURM binds one GPU to each task (CUDA_VISIBLE_DEVICES=<its GPU>)
    ({"SLURM_GPUS_PER_TASK": "1", "CUDA_VISIBLE_DEVICES": "2"}, 1, 0),
    # --gpus-per-node=4: every task sees the node's four GPUs; rank k takes cuda:k
    ({"SLURM_GPUS_ON_NODE": "4", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}, 4, 2),
    # --gpus-per-task=1 --gpu-bind=none: each task sees all four again
    ({"SLURM_GPUS_PER_TASK": "1", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}, 4, 2),
])
def test_each_srun_task_finds_its_gpu(srun, visible, gpu):
    from vitcli.core.runtime import rank_gpu

    env = {**_srun_env(2, nodes=1, per_node=4), **srun}
    slurm.join_tasks_as_ranks(env)  # RANK, LOCAL_RANK, LOCAL_WORLD_SIZE, ... as the task exports them
    assert len(env["CUDA_VISIBLE_DEVICES"].split(",")) == visible  # what torch.cuda.device_count() then says
    assert rank_gpu(visible, env) == gpu


def test_ranks_that_would_share_a_gpu_are_refused():
    from vitcli.core.errors import UserError
    from vitcli.core.runtime import rank_gpu

    # --gpus-per-node=1 for 4 tasks: they would all land on one GPU
    env = {**_srun_env(2, nodes=1, per_node=4), "CUDA_VISIBLE_DEVICES": "0"}
    slurm.join_tasks_as_ranks(env)
    with pytest.raises(UserError, match="4 processes on this node need 4 GPUs but 1 is visible to rank 2"):
        rank_gpu(1, env)
    # trainer.devices=2 relaunched by torchrun inside a one-task step given one GPU: its ranks are not SLURM's tasks
    relaunched = {**_srun_env(0, nodes=1, per_node=1), "SLURM_STEP_NUM_TASKS": "1", "SLURM_GPUS_PER_TASK": "1",
                  "RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
    with pytest.raises(UserError, match="need 2 GPUs but 1 is visible"):
        rank_gpu(1, relaunched)


def test_hydra_launcher_takes_one_gpu_per_task(compose, tmp_path, monkeypatch):
    """hydra.launcher.gpus_per_task=1 reaches sbatch as --gpus-per-task=1, without the preset's --gpus-per-node."""
    import shutil

    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    if shutil.which("srun") is None:  # submitit's executor looks for srun on PATH; this test only writes the script
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / "srun").chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    import submitit

    from vitcli.launch.slurm_launcher import executor_params

    def sbatch_lines(*overrides: str) -> list[str]:
        cfg = compose("train", ["hydra/launcher=slurm", "hydra.launcher.tasks_per_node=2", *overrides],
                      return_hydra_config=True)
        params = {k: v for k, v in cfg.hydra.launcher.items() if k not in ("_target_", "submitit_folder",
                                                                         "max_num_timeout")}
        executor = submitit.AutoExecutor(cluster="slurm", folder=tmp_path)
        executor.update_parameters(**executor_params(params))
        text = executor._executor._make_submission_file_text("python -m vitcli train", "uid")
        return [line for line in text.splitlines() if line.startswith("#SBATCH --gpus")]

    assert sbatch_lines() == ["#SBATCH --gpus-per-node=2"]
    assert sbatch_lines("hydra.launcher.gpus_per_task=1") == ["#SBATCH --gpus-per-task=1"]


def test_the_slurm_launcher_without_slurm_says_so_in_one_line(cli, tmp_path):
    import sys

    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    out = cli("train", "-m", "hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path,
              env={"PATH": os.path.dirname(sys.executable)}, check=False)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        "vitcli: error: hydra/launcher=slurm submits jobs with SLURM's sbatch, srun and squeue, and sbatch, srun, "
        "squeue are not on PATH here: run the sweep on a SLURM login node, or drop hydra/launcher=slurm to run its "
        "jobs on this machine"]
