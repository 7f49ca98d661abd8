"""`vitcli plan`: a run measured before launching it (throughput, memory split, ETA, the largest batch
that fits), writing only runs/plans/<stamp>/plan.json."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

GB = 1024**3
# the default digits run (vit_pico, AdamW, fp32 on the CPU), measured briefly
DEFAULT = ["trainer.device=cpu", "trainer.progress=plain", "data.batch_size=32", "trainer.epochs=3",
           "plan.warmup=1", "plan.steps=2", "plan.eval_batches=1"]


def plan_json(cwd: Path) -> dict:
    (path,) = (cwd / "runs" / "plans").glob("*/plan.json")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def default_plan(cli, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("plan")
    proc = cli("plan", *DEFAULT, cwd=cwd)
    return cwd, proc, plan_json(cwd)


def timm_vit_pico():
    """conf/model/vit_pico.yaml at 32 px, built by timm itself (not through vitcli)."""
    import timm

    return timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=6, embed_dim=128, num_heads=4,
                             global_pool="avg", class_token=False, num_classes=10)


def test_the_default_runs_plan_adds_up(default_plan):
    _, proc, plan = default_plan
    run, tp, mem, t = plan["run"], plan["throughput"], plan["memory"], plan["time"]
    params = list(timm_vit_pico().parameters())
    count = sum(p.numel() for p in params)
    assert run["num_params"] == count and run["device"] == "cpu" and run["world_size"] == 1
    assert run["global_batch"] == 32 and run["lr"] == 1e-3
    # fp32: 4 bytes a parameter; every parameter trains; AdamW: exp_avg + exp_avg_sq + a float32 step each
    assert mem["kind"] == "cpu_peak_rss"
    assert mem["params_bytes"] == 4 * count
    assert mem["grads_bytes"] == mem["params_bytes"]
    assert mem["optimizer_bytes"] == 2 * mem["params_bytes"] + 4 * len(params)
    assert mem["activations_bytes"] > 0 and mem["other_bytes"] > 0
    assert mem["peak_bytes"] == sum(mem[f"{k}_bytes"] for k in ("params", "grads", "optimizer", "activations", "other"))
    # 1,437 train images in batches of 32 (the ragged last one dropped); 360 val images
    assert t["batches_per_epoch"] == 1437 // 32 and t["eval_split"] == "val" and t["eval_samples"] == 360
    assert t["train_epoch_s"] == pytest.approx(tp["loader_startup_s"] + 44 * tp["batch_s"])
    assert t["eval_epoch_s"] == pytest.approx(tp["eval_startup_s"] + 360 / tp["eval_images_per_s"])
    assert t["epoch_s"] == pytest.approx(t["train_epoch_s"] + t["eval_epoch_s"] + t["epoch_end_s"])
    assert t["epochs"] == 3 and t["eta_s"] == pytest.approx(t["setup_s"] + t["first_use_s"] + 3 * t["epoch_s"])
    assert t["epoch_end_s"] > 0 and t["setup_s"] > 0 and t["first_use_s"] >= 0
    assert tp["images_per_s"] == pytest.approx(32 / tp["batch_s"], rel=1e-6)
    assert tp["bound"] == ("data" if tp["model_images_per_s"] >= tp["loader_images_per_s"] else "compute")
    assert plan["find_batch"] is None and plan["overrides"] == DEFAULT
    assert "ETA" in proc.stdout and "plan.json" in proc.stdout and "bound" in proc.stdout


def test_plan_writes_no_run(default_plan, cli):
    from vitcli.core.runs import find_run_dirs

    cwd, _, _ = default_plan
    files = [p.relative_to(cwd / "runs") for p in (cwd / "runs").rglob("*") if p.is_file()]
    assert [f.parts[0] for f in files] == ["plans"] and [f.name for f in files] == ["plan.json"]
    assert find_run_dirs(cwd / "runs") == []
    assert "no runs under runs" in cli("runs", cwd=cwd).stdout


def test_a_frozen_backbone_counts_only_the_head(compose, tiny_in_process, tmp_path):
    """Gradients and AdamW state exist for the trained parameters only (here: the classifier, while the
    backbone is frozen); plan measures the epochs after trainer.freeze_backbone_epochs."""
    from vitcli.models.factory import head_parameter_names
    from vitcli.tasks.plan import build_trainer
    from vitcli.tasks.plan_measure import measure_memory, run_steps, train_batches
    from vitcli.tasks.plan_memory import MemoryProbe

    cfg = compose("plan", [*tiny_in_process, "trainer.device=cpu", "trainer.freeze_backbone_epochs=1"])
    trainer = build_trainer(cfg, tmp_path)
    batches = train_batches(trainer, first_epoch=0)  # (plan itself measures the first unfrozen epoch)
    run_steps(trainer, [next(batches)])
    mem = measure_memory(trainer, batches, MemoryProbe(trainer.runtime.device))
    model = trainer.parts.model
    head = [p for n, p in model.named_parameters() if n in head_parameter_names(model)]
    head_bytes = sum(4 * p.numel() for p in head)
    assert 0 < head_bytes < mem["params"] == 4 * sum(p.numel() for p in model.parameters())
    assert mem["grads"] == head_bytes
    assert mem["optimizer"] == 2 * head_bytes + 4 * len(head)
    # what plan measures by default: the first epoch that trains everything (the costlier regime)
    mem = measure_memory(trainer, train_batches(trainer), MemoryProbe(trainer.runtime.device))
    assert mem["grads"] == mem["params"]


@pytest.mark.parametrize("start, cap, largest, expected", [
    (8, 1000, 37, (37, [8, 16, 32, 64, 48, 40, 36, 38, 37])),  # doubling, then bisection
    (64, 1000, 5, (5, [64, 32, 16, 8, 4, 6, 5])),  # the start does not fit: halving, then bisection
    (8, 20, 1000, (20, [8, 16, 20])),  # everything fits: the cap
    (4, 20, 0, (None, [4, 2, 1])),  # nothing fits
    (1, 100, 1, (1, [1, 2])),
])
def test_search_batch(start, cap, largest, expected):
    from vitcli.tasks.plan_batch import search_batch

    assert search_batch(lambda b: b <= largest, start, cap) == expected


def test_find_batch_under_a_small_budget(cli, compose, tmp_path):
    """A budget between the peaks a linear fit of two measured batches predicts for 11 and 12: the
    search finds about 11 and, exactly, the largest batch it measured under the budget."""
    from vitcli.core.runtime import Runtime
    from vitcli.tasks.plan import memory_trial
    from vitcli.tasks.plan_memory import MemoryProbe

    model = ["model.patch_size=4", "trainer.device=cpu", "trainer.progress=plain"]  # 64 tokens: ~4 MB an image
    cfg = compose("plan", model)
    probe = MemoryProbe(Runtime.create("cpu").device)
    peaks = {}
    for b in (4, 16):
        c = copy.deepcopy(cfg)
        c.data.batch_size = b
        peaks[b] = memory_trial(c, tmp_path, probe)["peak"]
        probe.release()
    per_image = (peaks[16] - peaks[4]) / 12
    assert per_image > 2**20
    budget = peaks[4] + 7.5 * per_image  # batch 11.5 on the line
    cli("plan", *model, "data.batch_size=4", "plan.find_batch=true", f"plan.memory_budget_gb={budget / GB}",
        "plan.max_batch=16", "optimizer.lr_base=1e-3", "optimizer.lr_base_size=32", "trainer.epochs=1",
        "plan.warmup=1", "plan.steps=1", "plan.eval_batches=1", cwd=tmp_path)
    plan = plan_json(tmp_path)
    search = plan["find_batch"]
    trials = {t["batch_size"]: t for t in search["trials"]}
    found = search["batch_size"]
    assert [t["batch_size"] for t in search["trials"]][:3] == [4, 8, 16]  # doubling up to plan.max_batch
    assert abs(found - 11) <= 2, search
    assert search["budget_bytes"] == pytest.approx(budget, abs=1)
    assert all(t["fits"] == (t["peak_bytes"] <= search["budget_bytes"]) for t in trials.values())
    assert trials[found]["fits"] and not trials[found + 1]["fits"]
    assert found == max(b for b, t in trials.items() if t["fits"])
    assert search["global_batch"] == found and search["lr"] == pytest.approx(1e-3 * found / 32)
    assert plan["run"]["batch_size"] == 4  # the configured batch fits: the figures are its own


def test_bad_plan_option_is_one_line(cli, tmp_path):
    proc = cli("plan", "plan.steps=0", cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "plan.steps=0 must be at least 1" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("plan.json"))


SHARDED = '''
import json, os, sys
import torch, torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from vitcli.tasks.plan_memory import grad_bytes, optimizer_bytes, param_bytes

dist.init_process_group("gloo")
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU(), torch.nn.Linear(64, 10))
full = param_bytes(model)
for layer in model:
    fully_shard(layer)
fully_shard(model)
optimizer = torch.optim.AdamW(model.parameters())
model(torch.randn(4, 64)).sum().backward()
optimizer.step()
record = dict(full=full, params=param_bytes(model), grads=grad_bytes(model), optimizer=optimizer_bytes(optimizer),
              tensors=len(list(model.parameters())))
with open(os.path.join(sys.argv[1], f"rank{dist.get_rank()}.json"), "w") as f:
    json.dump(record, f)
dist.destroy_process_group()
'''


def test_fsdp_counts_each_ranks_local_shard(tmp_path):
    """FSDP2 (fully_shard) on 2 gloo ranks: each rank holds, and plan counts, half the bytes."""
    script = tmp_path / "sharded.py"
    script.write_text(SHARDED)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                    str(script), str(tmp_path)], check=True, capture_output=True, timeout=300,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    for rank in (0, 1):
        r = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert r["full"] == 4 * (64 * 64 + 64 + 10 * 64 + 10)
        assert r["params"] == r["grads"] == r["full"] // 2
        assert r["optimizer"] == 2 * r["params"] + 4 * r["tensors"]


@pytest.mark.slow  # two ranks through torchrun, each building the run
def test_plan_on_two_ranks(cli, tmp_path):
    """trainer.devices=2: torchrun ranks, rank 0 writes one plan.json with each rank's share."""
    cli("plan", *DEFAULT, "trainer.devices=2", cwd=tmp_path)
    plan = plan_json(tmp_path)
    run, mem, t = plan["run"], plan["memory"], plan["time"]
    count = sum(p.numel() for p in timm_vit_pico().parameters())
    assert run["world_size"] == 2 and run["global_batch"] == 64 and run["strategy"] == "ddp"
    assert mem["params_bytes"] == mem["grads_bytes"] == 4 * count  # DDP: a full replica on each rank
    assert t["batches_per_epoch"] == 719 // 32 and t["eval_samples"] == 180  # each rank's half of 1,437 / 360
    assert plan["throughput"]["global_images_per_s"] == pytest.approx(2 * plan["throughput"]["images_per_s"])
    assert [p.name for p in (tmp_path / "runs").rglob("*") if p.is_file()] == ["plan.json"]
