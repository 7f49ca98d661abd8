"""End to end on shards and hf datasets (slow): a run killed mid-epoch on shards resumes bitwise,
and digits written as an image folder, as shards and as an hf dataset train alike."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from data_builders import (
    digits_images,
    split_indices,
    write_folder,
    write_hf,
    write_shards,
)

pytestmark = pytest.mark.slow

# every RNG the loop has (as tests/test_resume.py), with samples decoded from shards by 2 workers
HARD = ["trainer.epochs=3", "regularization=heavy", "augmentation=mixup_cutmix", "trainer.ema=true",
        "trainer.ckpt_interval_steps=1", "data.num_workers=2"]


def shard_overrides(tiny_overrides, root, cache):
    data_free = [o for o in tiny_overrides if not o.startswith("data.")]
    return [*data_free, "data=wds", f"data.root={root}", "data.img_size=16", "data.batch_size=32",
            f"data.cache_dir={cache}", *HARD]


def kill_mid_epoch(overrides, run_dir) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.Popen([sys.executable, "-m", "vitcli", "train", *overrides, f"hydra.run.dir={run_dir}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    last = run_dir / "checkpoints/last.pt"
    killed = False
    try:
        while proc.poll() is None:
            if last.is_file():
                state = torch.load(last, weights_only=True)
                if state["epoch"] >= 1 and state["batch_in_epoch"] > 0:
                    proc.send_signal(signal.SIGKILL)  # wherever it is now, maybe mid-save
                    killed = True
                    break
            time.sleep(0.01)
    finally:
        proc.wait()
    assert killed, "the run finished before it could be killed mid-epoch"


def test_sigkill_mid_epoch_on_shards_resumes_bitwise(cli, tiny_overrides, read_summary, tmp_path):
    images, labels, names = digits_images(16, per_class=20)
    root = write_shards(tmp_path / "wds", images, labels, names, split_indices(labels), per_shard=40)
    overrides = shard_overrides(tiny_overrides, root, tmp_path / "cache")
    cli("train", *overrides, f"hydra.run.dir={tmp_path / 'reference'}")
    killed = tmp_path / "killed"
    kill_mid_epoch(overrides, killed)
    proc = cli("train", *overrides, f"hydra.run.dir={killed}")  # same command and dir: resumes
    assert "resumed from" in proc.stdout
    ref = torch.load(tmp_path / "reference/checkpoints/last.pt", weights_only=True)
    res = torch.load(killed / "checkpoints/last.pt", weights_only=True)
    for key in ("model", "model_ema"):
        mismatched = [k for k in ref[key] if not torch.equal(ref[key][k], res[key][k])]
        assert not mismatched, f"{key}: {mismatched[:5]}"
    assert read_summary(killed)["best"] == read_summary(tmp_path / "reference")["best"]


def test_digits_as_folder_shards_and_hf_train_alike(make_trainer, tmp_path, monkeypatch):
    monkeypatch.setenv("VITCLI_CACHE", str(tmp_path / "cache"))
    images, labels, names = digits_images(16, per_class=30)
    splits = split_indices(labels)
    # every source lists the samples in the folder's order (class folder, then file name)
    ordered = {k: sorted(v, key=lambda i: (names[labels[i]], i)) for k, v in splits.items()}
    sources = {
        "folder": ["data=imagefolder", f"data.root={write_folder(tmp_path / 'f', images, labels, names, splits)}",
                   "data.format=files"],  # per sample, as shards and hf rows are (auto would hold it in memory)
        "wds": ["data=wds", f"data.root={write_shards(tmp_path / 'w', images, labels, names, ordered)}"],
        "hf": ["data=hf", f"data.dataset={write_hf(tmp_path / 'h', images, labels, names, ordered)}"],
    }
    recipe = ["data.img_size=16", "data.batch_size=32", "data.num_workers=0", "trainer.epochs=3",
              "optimizer.lr=3e-3", "augmentation=shift_scale", "trainer.seed=3", "data.class_balance=weighted_loss"]
    top1 = {}
    for name, data in sources.items():
        summary = make_trainer(tmp_path / name, *data, *recipe).fit()
        top1[name] = summary["best"]["val_top1"]
        counts = (tmp_path / name / "class_counts.csv").read_text().splitlines()
        assert counts[0] == "class,name,count" and len(counts) == 11
    assert top1["folder"] > 12, top1  # above chance (10%) after 3 short epochs
    assert max(top1.values()) - min(top1.values()) <= 2.0, top1
