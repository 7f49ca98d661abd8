"""DDP through torchrun: 2 CPU processes with gloo on synthetic data, sharding, rank failures."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vitcli.core.errors import UserError

# 165 samples: 132 train (66 per rank), 33 val (not divisible by 2 ranks)
DDP = ["trainer.devices=2", "trainer.device=cpu", "data.num_samples=165"]


def test_two_cpu_ranks_write_one_run_dir_and_match_single_process_eval(cli, read_summary, train_tiny, tmp_path):
    run_dir = tmp_path / "runs" / "ddp"
    proc = train_tiny(run_dir, *DDP)
    assert "launching 2 processes with torchrun" in proc.stdout
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["ddp"]  # one run dir for all ranks
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2
    assert summary["devices"] == 2 and summary["global_batch_size"] == 64
    assert summary["val_samples"] == 33
    for name in ("checkpoints/best.pt", "checkpoints/last.pt", "model.safetensors", "metrics.jsonl"):
        assert (run_dir / name).is_file(), name
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in epochs if r["kind"] == "epoch"] == [1, 2]  # rank 0 alone logs
    log = (run_dir / "train.log").read_text()
    assert log.count("global batch 64 = 32 per device x 2 device(s)") == 1
    state = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state["model"])  # the unwrapped model's keys

    cli("eval", f"run={run_dir}", "device=cpu")  # one process over the whole val split
    result = json.loads((run_dir / "eval" / "val_best.json").read_text())
    assert result["samples"] == 33
    assert result["top1"] == summary["best"]["val_top1"]
    assert result["top5"] == summary["best"]["val_top5"]
    assert result["loss"] == pytest.approx(summary["best"]["val_loss"], rel=1e-5)


@pytest.mark.slow
def test_a_failing_rank_ends_the_job_with_its_error_in_one_line(read_summary, train_tiny, tmp_path):
    # sitecustomize runs in every process; it breaks only rank 1's training
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('RANK') == '1':\n"
        "    import vitcli.engine.trainer as t\n"
        "    from vitcli.core.errors import UserError\n"
        "    def fail(self, epoch):\n"
        "        raise UserError('rank one cannot go on')\n"
        "    t.Trainer.train_one_epoch = fail\n"
    )
    run_dir = tmp_path / "run"
    env = {"PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])}
    proc = train_tiny(run_dir, *DDP, env=env, check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert errors == ["vitcli: error: rank 1: rank one cannot go on"], proc.stderr
    summary = read_summary(run_dir)
    assert summary["status"] == "failed" and summary["error"] == "rank 1: rank one cannot go on"


def _eval_rank(rank: int, world: int, store: str, labels: np.ndarray, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    import torch.distributed as dist

    from vitcli.core.runtime import Runtime
    from vitcli.launch import comm
    from vitcli.engine.evaluate import evaluate

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5))
    loader = _loader(labels)
    single = evaluate(model, loader, Runtime(torch.device("cpu")))  # one process's view: no reduction
    loader.shard(rank, world, pad=False)
    sharded = evaluate(model, loader, Runtime(torch.device("cpu"), rank=rank, world_size=world))
    bn = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    keys = list(comm.wrap_model(bn, torch.device("cpu"), sync_batchnorm=False).module.state_dict())
    try:
        comm.wrap_model(bn, torch.device("cpu"), sync_batchnorm=True)
        sync_bn_error = ""
    except UserError as err:
        sync_bn_error = str(err)
    dist.destroy_process_group()
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"single": single, "sharded": sharded, "keys": keys, "sync_bn_error": sync_bn_error}, f)


def _loader(labels: np.ndarray):
    from vitcli.data.arrays import ArrayLoader, ArraySplit

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (len(labels), 4, 4, 3), dtype=np.uint8)
    split = ArraySplit(images, labels, [str(i) for i in range(len(labels))])
    return ArrayLoader(split, batch_size=2, img_size=4, mean=[0.5] * 3, std=[0.5] * 3)


@pytest.mark.slow
def test_sharded_eval_counts_every_sample_once(tmp_path):
    labels = np.arange(11) % 5  # 11 samples over 3 ranks: shards of 4, 4 and 3
    out = tmp_path / "out.json"
    torch.multiprocessing.spawn(_eval_rank, args=(3, str(tmp_path / "store"), labels, str(out)), nprocs=3)
    result = json.loads(out.read_text())
    assert result["sharded"]["samples"] == 11
    for key in ("top1", "top5"):
        assert result["sharded"][key] == result["single"][key]
    assert result["sharded"]["loss"] == pytest.approx(result["single"]["loss"], rel=1e-6)
    assert result["keys"] == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                              "1.num_batches_tracked"]  # DDP's .module: keys unchanged
    assert "sync_batchnorm=true needs GPUs" in result["sync_bn_error"]


@pytest.mark.parametrize("world", [2, 3, 4])
def test_shards_are_disjoint_and_padded_only_for_training(world):
    from vitcli.data.arrays import shard_order

    order = np.random.default_rng(0).permutation(11)
    evals = [shard_order(order, r, world, pad=False) for r in range(world)]
    assert sorted(np.concatenate(evals).tolist()) == list(range(11))  # each sample exactly once
    trains = [shard_order(order, r, world, pad=True) for r in range(world)]
    assert len({len(t) for t in trains}) == 1  # equal step counts on every rank
    assert set(np.concatenate(trains).tolist()) == set(range(11))


def test_array_and_file_loaders_shard_the_same_seeded_epoch_order():
    from vitcli.data.arrays import ArrayLoader, ArraySplit
    from vitcli.data.files import FileLoader, FileSplit

    n, bs = 40, 4
    labels = np.arange(n) % 4
    arrays = ArraySplit(np.zeros((n, 2, 2, 3), np.uint8), labels, [str(i) for i in range(n)])
    files = FileSplit([f"/x/{i}.jpg" for i in range(n)], labels, [str(i) for i in range(n)])
    seen_arrays, seen_files = [], []
    for rank in range(2):
        a = ArrayLoader(arrays, bs, img_size=2, mean=[0.5] * 3, std=[0.5] * 3, shuffle=True, drop_last=True, seed=3)
        f = FileLoader(files, transform=None, batch_size=bs, bad=None, shuffle=True, drop_last=True, seed=3)
        for loader in (a, f):
            loader.shard(rank, 2)
            loader.set_epoch(1)
        assert len(a) == len(f) == n // 2 // bs
        seen_arrays.append(np.concatenate([a.order()[s * bs:(s + 1) * bs] for s in range(len(a))]))
        seen_files.append(np.concatenate(f.batches()))
    assert sorted(np.concatenate(seen_files).tolist()) == list(range(n))
    for got_a, got_f in zip(seen_arrays, seen_files):
        assert sorted(got_a.tolist()) == sorted(got_f.tolist())
    assert not set(seen_arrays[0]) & set(seen_arrays[1])


@pytest.mark.parametrize("scale, expected", [("linear", 4e-3), ("sqrt", 2e-3)])
def test_lr_base_scales_with_the_global_batch(compose, monkeypatch, scale, expected):
    from vitcli.engine.optim import global_batch_size, scaled_lr

    cfg = compose("train", ["data.batch_size=64", "trainer.grad_accum=2", "optimizer.lr_base=1e-3",
                            "optimizer.lr_base_size=128", f"optimizer.lr_base_scale={scale}"])
    lr = scaled_lr(cfg.optimizer, global_batch_size(cfg.data.batch_size, 4, cfg.trainer.grad_accum))  # 512 = 4 x 128
    assert lr == pytest.approx(expected)
    assert cfg.optimizer.lr == 1e-3  # pure: the config is left as the user wrote it


def test_child_command_line_keeps_overrides_and_pins_the_run_dir(tmp_path):
    from vitcli.launch.torchrun import child_overrides, launcher_args

    args = launcher_args(2, child_overrides(["trainer.devices=2", "data=synthetic"],
                                            ["hydra.run.dir=elsewhere", "hydra.mode=MULTIRUN", "hydra.verbose=true"],
                                            tmp_path / "run"))
    assert args[:3] == ["--standalone", "--nproc-per-node=2", "--local-ranks-filter=0"]
    assert args[3:6] == ["--module", "vitcli", "train"]
    assert args[6:] == ["trainer.devices=2", "data=synthetic", "hydra.verbose=true",
                        f"hydra.run.dir='{(tmp_path / 'run').resolve()}'", "hydra.output_subdir=null"]


def test_root_cause_is_the_rank_that_did_not_fail_because_of_another():
    from vitcli.launch.comm import PEER_FAILED
    from vitcli.launch.torchrun import ranks_failed

    def failure(message, timestamp, exitcode=2):
        return SimpleNamespace(message=message, timestamp=timestamp, exitcode=exitcode,
                               error_file_data={"vitcli": True}, signal_name=lambda: "SIGKILL")

    err = ranks_failed({0: failure(PEER_FAILED, 5), 1: failure("rank 1: disk full", 6)}, 2)
    assert str(err) == "rank 1: disk full" and err.exit_code == 2
    # torchrun stopped rank 1 after it wrote why (its peer had already failed on the closed group)
    err = ranks_failed({0: failure(PEER_FAILED, 5), 1: failure("rank 1: disk full", 6, exitcode=-15)}, 2)
    assert str(err) == "rank 1: disk full" and err.exit_code == 2
    err = ranks_failed({1: failure("", 7, exitcode=-9)}, 2)
    assert "killed by SIGKILL" in str(err) and err.exit_code == 137


def _scan_fails_on_rank0(rank: int, world: int, store: str, out: str) -> None:
    """One gloo rank: an image folder whose scan fails on rank 0 (the only rank that scans)."""
    import datetime

    import torch.distributed as dist

    from vitcli.core.errors import UserError
    from vitcli.data.sources.folder_index import rank0_only

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    # a short timeout: a rank left waiting in the broadcast fails within seconds, not after 30 minutes
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=20))

    def scan():
        raise UserError("data.root=/data/missing has no train/ folder")

    try:
        rank0_only(scan)
        result = {"type": None, "error": None}
    except Exception as err:  # noqa: BLE001  (what each rank raised is the point)
        result = {"type": type(err).__name__, "error": str(err)}
    with open(f"{out}.{rank}", "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes that each import torch
def test_a_failed_scan_on_rank0_is_one_error_on_every_rank(tmp_path):
    out = str(tmp_path / "result")
    torch.multiprocessing.spawn(_scan_fails_on_rank0, args=(2, str(tmp_path / "store"), out), nprocs=2)
    results = [json.loads((tmp_path / f"result.{r}").read_text()) for r in range(2)]
    expected = ("UserError", "data.root=/data/missing has no train/ folder")
    assert [(r["type"], r["error"]) for r in results] == [expected, expected]
