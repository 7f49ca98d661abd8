"""trainer.strategy=fsdp on 2 CPU ranks with gloo: the same steps as DDP, half the bytes per rank,
sharded checkpoints that resume bitwise (after SIGKILL or a stop signal) and reshard to another
world size, and a run every other command reads unchanged."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from processes import kill_tree, rank_pid

TWO = ["trainer.devices=2", "trainer.device=cpu", "trainer.threads=1", "data.batch_size=16", "trainer.log_interval=1"]
# every RNG the loop has (dropout, drop path, MixUp/CutMix, EMA) and a checkpoint at every step
HARD = ["trainer.epochs=3", "regularization=heavy", "augmentation=mixup_cutmix", "trainer.ema=true",
        "trainer.ckpt_interval_steps=1", "data.num_samples=200", "data.eval_batch_size=4"]
# the features FSDP must keep working: accumulation, clipping on sharded gradients, recomputed
# activations, layer-wise lr decay, EMA
FEATURES = ["trainer.epochs=2", "trainer.grad_accum=2", "trainer.clip_grad=0.5", "trainer.grad_checkpointing=true",
            "optimizer.layer_decay=0.75", "trainer.ema=true", "regularization=medium"]
# 128 train samples: 4 steps of 2 x 16 per epoch, 20 in 5 epochs
STEPS20 = ["trainer.epochs=5", "data.num_samples=160"]
LOSS_TOL = 1e-4  # reduce-scatter and all-reduce sum the same gradients in another order (float32)


def step_losses(run_dir: Path) -> list[float]:
    return [r["train_loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if r["kind"] == "step"]


def whole(run_dir: Path, which: str = "last") -> dict:
    """A checkpoint's model and EMA weights as one process reads them (a sharded one gathered)."""
    from vitcli.core import runs
    from vitcli.core.checkpoint import load_checkpoint

    return load_checkpoint(runs.checkpoint_path(run_dir, which))


def assert_same_weights(a: dict, b: dict) -> None:
    for key in ("model", "model_ema"):
        assert a[key].keys() == b[key].keys()
        mismatched = [k for k in a[key] if not torch.equal(a[key][k], b[key][k])]
        assert not mismatched, f"{key}: {mismatched[:5]}"
    assert a["global_step"] == b["global_step"]


@pytest.fixture(scope="module")
def pair(train_tiny, tmp_path_factory):
    """The same 20 steps under DDP and FSDP."""
    root = tmp_path_factory.mktemp("fsdp_vs_ddp")
    for strategy in ("ddp", "fsdp"):
        train_tiny(root / strategy, *TWO, *STEPS20, f"trainer.strategy={strategy}")
    return root / "ddp", root / "fsdp"


def test_fsdp_takes_the_steps_ddp_takes(pair, read_summary):
    ddp, fsdp = pair
    a, b = step_losses(ddp), step_losses(fsdp)
    assert len(a) == len(b) == 20
    assert len(set(a)) > 10  # the loss moves: equal lists are not a flat line
    assert b == pytest.approx(a, abs=LOSS_TOL)
    assert read_summary(fsdp)["best"]["val_top1"] == pytest.approx(read_summary(ddp)["best"]["val_top1"], abs=5)
    # the checkpoint is sharded (a link to a step directory, one shard file per rank), not gathered
    last = fsdp / "checkpoints" / "last"
    assert last.is_symlink() and len(list(last.glob("shard-*.safetensors"))) == 2
    assert not (fsdp / "checkpoints" / "last.pt").exists()


def test_every_command_reads_an_fsdp_run_unchanged(pair, cli, read_summary):
    """eval, predict, explain, probe and ensemble read the sharded checkpoints whole; model.safetensors was
    gathered."""
    from safetensors.torch import load_file

    _, fsdp = pair
    cli("eval", f"run={fsdp}", "device=cpu")
    result = json.loads((fsdp / "eval" / "val_best.json").read_text())
    best = read_summary(fsdp)["best"]
    assert result["top1"] == best["val_top1"] and result["loss"] == pytest.approx(best["val_loss"], rel=1e-5)
    cli("predict", f"run={fsdp}", "device=cpu", "split=val")
    assert (fsdp / "predictions" / "val.npz").is_file()
    exported = load_file(str(fsdp / "model.safetensors"))
    weights = whole(fsdp, "best")["model"]
    assert exported.keys() == weights.keys() and all(torch.equal(exported[k], weights[k]) for k in weights)
    cli("explain", f"run={fsdp}", "n=2", "device=cpu")
    assert (fsdp / "plots" / "explain_val_rollout.png").stat().st_size > 1000
    cli("probe", f"run={fsdp}", "method=knn", "trainer.device=cpu")
    probe = json.loads((fsdp / "probe" / "knn.json").read_text())
    assert probe["splits"]["val"]["samples"] == result["samples"]
    out = fsdp.parent / "ensemble"
    cli("ensemble", f"runs=[{pair[0]},{fsdp},{fsdp}/probe/knn]", "split=val", "method=mean_prob", f"out={out}",
        "device=cpu")
    from vitcli.core.predictions import load_predictions

    assert len(load_predictions(out / "predictions" / "val.npz")) == result["samples"]


def test_each_rank_holds_half_the_bytes_ddp_holds(cli, tmp_path):
    """Parameters, gradients and AdamW state counted from each rank's local shards (vitcli plan)."""
    mem = {}
    for strategy in ("ddp", "fsdp"):
        (tmp_path / strategy).mkdir()
        cli("plan", *TWO, "model=vit_pico", "data=synthetic", "data.num_samples=160", "data.img_size=16",
            "data.native_size=16", "plan.warmup=1", "plan.steps=1", f"trainer.strategy={strategy}",
            cwd=tmp_path / strategy)
        plan = json.loads(next((tmp_path / strategy).rglob("plan.json")).read_text())
        assert plan["run"]["strategy"] == strategy
        mem[strategy] = plan["memory"]
    for part in ("params_bytes", "grads_bytes", "optimizer_bytes"):
        ratio = mem["fsdp"][part] / mem["ddp"][part]
        assert 0.45 < ratio < 0.55, (part, ratio)  # dim-0 shards: rank 0 may hold a padded row more


def _killed_mid_epoch(tiny_overrides, run_dir: Path) -> dict:
    """Start the FSDP run, SIGKILL every process of it once a mid-epoch checkpoint of epoch 2 exists."""
    from vitcli.core.sharded import read_state_json

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    args = [sys.executable, "-m", "vitcli", "train", *tiny_overrides, *TWO, *HARD, "trainer.strategy=fsdp",
            f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    seen = None
    try:
        while proc.poll() is None:
            try:
                state = read_state_json(run_dir / "checkpoints" / "last")
            except Exception:
                state = {"epoch": 0}
            if state["epoch"] >= 1 and state["batch_in_epoch"] > 0:
                kill_tree(proc.pid, signal.SIGKILL)  # the ranks too: wherever they are, maybe mid-save
                seen = state
                break
            time.sleep(0.01)
    finally:
        proc.wait()
    assert seen is not None, "the run finished before it could be killed mid-epoch"
    return seen


@pytest.fixture(scope="module")
def fsdp_reference(train_tiny, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("fsdp_hard") / "reference"
    train_tiny(run_dir, *TWO, *HARD, "trainer.strategy=fsdp")
    return run_dir


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(tiny_overrides, train_tiny, read_summary, tmp_path,
                                                            fsdp_reference):
    killed = tmp_path / "killed"
    _killed_mid_epoch(tiny_overrides, killed)
    assert read_summary(killed)["status"] == "running"
    proc = train_tiny(killed, *TWO, *HARD, "trainer.strategy=fsdp")  # the same command: resumes
    resumed = re.search(r"resumed from \S+ after epoch (\d+) batch (\d+)", proc.stdout + (killed / "train.log").read_text())
    assert resumed and int(resumed[1]) >= 2, "killed mid-epoch 2 or 3: resumed mid-epoch"
    assert_same_weights(whole(fsdp_reference), whole(killed))
    assert read_summary(killed)["best"] == read_summary(fsdp_reference)["best"]
    steps = [p.name for p in (killed / "checkpoints").iterdir() if p.name.startswith((".step", "step"))]
    assert len(steps) <= 2, steps  # last and best; older and partial step dirs are collected


@pytest.mark.slow
def test_a_stop_signal_to_one_rank_saves_once_and_resumes_bitwise(tiny_overrides, train_tiny, read_summary,
                                                                  tmp_path, fsdp_reference):
    """SIGUSR2 (SLURM's time-limit warning) to rank 1 alone: both ranks stop at the same step, the
    shards are saved once, and the rerun ends equal to the uninterrupted run (as under DDP)."""
    from vitcli.core.sharded import read_state_json

    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "vitcli", "train", *tiny_overrides, *TWO, *HARD, "trainer.strategy=fsdp",
            f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    sent = None
    while proc.poll() is None and sent is None:
        try:
            state = read_state_json(run_dir / "checkpoints" / "last")
        except Exception:
            state = {"epoch": 0}
        if state["epoch"] == 1 and state["batch_in_epoch"] > 0 and (pid := rank_pid(proc.pid, "1")):
            os.kill(pid, signal.SIGUSR2)
            sent = state["global_step"]
        time.sleep(0.05)
    _, stderr = proc.communicate(timeout=300)
    assert sent is not None, "the run ended before rank 1 could be signalled"
    assert proc.returncode == 128 + signal.SIGUSR2, stderr
    summary = read_summary(run_dir)
    saved = read_state_json(run_dir / "checkpoints" / "last")
    assert summary["status"] == "interrupted" and saved["global_step"] == summary["global_step"]
    assert len(list((run_dir / "checkpoints" / "last").glob("rng-*.safetensors"))) == 2  # each rank's own
    train_tiny(run_dir, *TWO, *HARD, "trainer.strategy=fsdp")
    assert_same_weights(whole(fsdp_reference), whole(run_dir))
    assert read_summary(run_dir)["best"] == read_summary(fsdp_reference)["best"]


@pytest.mark.slow
def test_the_features_work_under_fsdp_as_under_ddp(train_tiny, tmp_path):
    """Accumulation, clipping, grad checkpointing, layer decay and EMA; LoRA with a frozen-head epoch."""
    for name, extra in (("features", FEATURES),
                        ("lora", ["model.peft=lora", "trainer.ema=true", "trainer.freeze_backbone_epochs=1",
                                  "trainer.epochs=2"])):
        runs = {}
        for strategy in ("ddp", "fsdp"):
            runs[strategy] = tmp_path / f"{name}_{strategy}"
            train_tiny(runs[strategy], *TWO, *extra, f"trainer.strategy={strategy}")
        a, b = step_losses(runs["ddp"]), step_losses(runs["fsdp"])
        assert len(a) == len(b) >= 4 and b == pytest.approx(a, abs=LOSS_TOL), name


def _load_on_three_ranks(rank: int, store: str, run_dir: str, out: str) -> None:
    """One of three ranks: the run's model, sharded three ways, filled from the two-rank checkpoint."""
    import torch.distributed as dist

    from vitcli.core import runs
    from vitcli.launch import sharded_checkpoint
    from vitcli.launch.fsdp import shard_model
    from vitcli.models.factory import create_model

    os.environ.update(RANK=str(rank), WORLD_SIZE="3", LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=3)
    cfg = runs.load_run_config(Path(run_dir))
    model = shard_model(create_model(cfg.model, 10, cfg.regularization, seed=123))  # other init than the run's
    template = sharded_checkpoint.load(Path(run_dir) / "checkpoints" / "last", {"model": model.state_dict()})
    model.load_state_dict(template["model"])
    local = {k: tuple(v.to_local().shape) for k, v in model.state_dict().items()}
    full = {k: v.full_tensor() for k, v in model.state_dict().items()}
    if rank == 0:
        torch.save({"full": full, "local": local}, out)
    dist.destroy_process_group()


def test_a_checkpoint_of_two_ranks_loads_into_three(cli, train_tiny, read_summary, tmp_path):
    """Resharded: each of three ranks holds its third of the weights two ranks saved, and a resumed
    run goes on at the new world size."""
    import torch.multiprocessing as mp

    from vitcli.core.sharded import full_tensors

    run_dir = tmp_path / "run"
    train_tiny(run_dir, *TWO, "trainer.epochs=1", "trainer.strategy=fsdp", "trainer.export_safetensors=false")
    saved = {k[len("model."):]: v for k, v in full_tensors(run_dir / "checkpoints" / "last").items()
             if k.startswith("model.")}
    mp.spawn(_load_on_three_ranks, args=(str(tmp_path / "store"), str(run_dir), str(tmp_path / "out.pt")), nprocs=3)
    got = torch.load(tmp_path / "out.pt", weights_only=True)
    assert got["full"].keys() == saved.keys()
    assert all(torch.equal(got["full"][k], saved[k]) for k in saved)
    qkv = next(k for k in saved if k.endswith("attn.qkv.weight"))
    assert got["local"][qkv][0] == -(-saved[qkv].shape[0] // 3)  # rank 0's third of the rows

    proc = cli("train", f"resume={run_dir}", "trainer.devices=3", "trainer.epochs=2")
    assert "resumed from" in proc.stdout + (run_dir / "train.log").read_text()
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["devices"] == 3 and summary["epochs_completed"] == 2


def test_fsdp_settings_it_cannot_honour_are_one_line(cli, tiny_overrides, tmp_path):
    proc = cli("train", *tiny_overrides, "trainer.strategy=fsdp", "trainer.device=cpu", check=False, cwd=tmp_path)
    assert proc.returncode != 0 and "trainer.strategy=fsdp shards a model over several ranks" in proc.stderr
    proc = cli("train", *tiny_overrides, *TWO, "trainer.strategy=fsdp", "trainer.precision=fp16", check=False,
               cwd=tmp_path)
    assert proc.returncode != 0 and "use trainer.precision=bf16" in proc.stderr
