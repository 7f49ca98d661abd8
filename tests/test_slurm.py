"""SLURM without a cluster: srun's environment -> DDP ranks, and what a stopped run asks of SLURM
(the job's state as scontrol reports it). The real cluster tests live in tests/slurm/."""

from __future__ import annotations

import signal

import pytest

from vitcli.engine import slurm


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
    assert 20000 <= tasks[0].master_port < 60000
    other_job = slurm.step_task(_srun_env(0, job="4243"))
    assert other_job.master_port != tasks[0].master_port
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
    # MASTER_PORT set by the user wins
    assert slurm.step_task({**_srun_env(0), "MASTER_PORT": "29511"}).master_port == 29511


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
    plan = slurm.plan_stop(signum, env, show=lambda job: asked.append(job) or fields)
    assert (plan.status, plan.requeue_here, plan.requeues) == (status, here, requeues)
    assert asked in ([], ["77"])


def test_stop_outside_slurm_is_an_interrupt():
    plan = slurm.plan_stop(signal.SIGTERM, {}, show=lambda job: pytest.fail("no scontrol outside SLURM"))
    assert plan.status == "interrupted" and not plan.requeue_here
    assert slurm.summary_fields(env={}) == {}
