"""Attacks on the trust boundary: what a run reads from data (shards, checkpoints, prediction files,
class names) is data only: never executed, never unpickled, never a path outside the run dir."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch


# checkpoints, predictions and class names

class Planted:
    """Unpickling this creates `path` (what a hostile checkpoint or npz would do instead)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _files(root: Path) -> set[Path]:
    return {p for p in Path(root).rglob("*") if p.is_file()}


def _one_line(proc) -> str:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_a_pickle_in_a_checkpoint_is_refused_not_run(tiny_run_copy, cli, tmp_path):
    run, marker = tiny_run_copy, tmp_path / "planted"
    for which in ("best", "last"):
        torch.save({"model": {}, "payload": Planted(marker)}, run / "checkpoints" / f"{which}.pt")
    for args in (("eval", f"run={run}"), ("predict", f"run={run}"), ("export", f"run={run}"),
                 ("predict", f"run={run}", f"images={run / 'plots'}"), ("train", f"resume={run}", "trainer.epochs=3")):
        line = _one_line(cli(*args, check=False))
        assert "refusing to load" in line and "pickled Python objects" in line, args
        assert not marker.exists(), args


HOSTILE = ["../../escape", "/tmp/vitcli-abs-" + uuid.uuid4().hex, "new\nline", "a/b", "..", "/", "c:\\x", "ok",
           "tab\there", "x" * 300]


def _check_nothing_outside(run: Path, before: set[Path], root: Path, cwd_before: set[str]) -> None:
    new = _files(root) - before
    assert new and all(run in p.parents for p in new), sorted(map(str, new - {p for p in new if run in p.parents}))
    assert set(os.listdir(".")) == cwd_before
    assert not Path(HOSTILE[1]).exists()


def test_hostile_class_names_in_a_checkpoint_stay_data(tiny_run_copy, cli, tmp_path):
    run = tiny_run_copy
    path = run / "checkpoints" / "best.pt"
    state = torch.load(path, weights_only=True)
    state["class_names"] = list(HOSTILE)
    torch.save(state, path)
    line = _one_line(cli("eval", f"run={run}", check=False))  # strict: the names differ from the data's
    assert "class 0 is '../../escape' in the checkpoint but 'class_0' in data=synthetic" in line
    assert "'new\\nline'" in line  # quoted: the message stays one line

    before, cwd_before = _files(tmp_path), set(os.listdir("."))
    cli("eval", f"run={run}", "data_check=warn")
    cli("predict", f"run={run}", "split=val", "submission=always", "data_check=warn")
    cli("predict", f"run={run}", f"images={run / 'plots'}", "name=plots")
    cli("export", f"run={run}", "data_check=warn")
    _check_nothing_outside(run, before, tmp_path, cwd_before)
    import csv

    with open(run / "eval" / "val_best_per_class.csv", newline="") as f:
        assert [row["name"] for row in csv.DictReader(f)] == HOSTILE  # cells, read back intact
    assert json.loads((run / "export" / "best_timm" / "config.json").read_text())["label_names"] == HOSTILE
    assert (run / "submission" / "val_top5.txt").is_file()


@pytest.fixture(scope="module")
def hostile_hf_run(tmp_path_factory, cli):
    """One epoch on a Hugging Face dataset whose ClassLabel names are paths, '..' and newlines."""
    from data_builders import digits_images, split_indices, write_hf

    root = tmp_path_factory.mktemp("hostile_hf")
    images, labels, _ = digits_images(16, per_class=4)
    data = write_hf(root / "ds", images, labels, HOSTILE, split_indices(labels))
    cli("train", "model=vit_pico", "model.patch_size=4", "data=hf", f"data.dataset={data}", "data.img_size=16",
        "data.batch_size=16", "data.num_workers=0", f"data.cache_dir={root / 'cache'}", "augmentation=none",
        "trainer.epochs=1", "trainer.progress=none", f"hydra.run.dir={root / 'run'}")
    return root / "run"


def test_hostile_class_names_in_a_dataset_stay_data(hostile_hf_run, cli, tmp_path):
    import shutil

    run = Path(shutil.copytree(hostile_hf_run, tmp_path / "run"))
    assert torch.load(run / "checkpoints" / "best.pt", weights_only=True)["class_names"] == HOSTILE
    before, cwd_before = _files(tmp_path), set(os.listdir("."))
    cli("eval", f"run={run}")
    cli("predict", f"run={run}", "split=val", "submission=always")
    cli("export", f"run={run}")
    _check_nothing_outside(run, before, tmp_path, cwd_before)
    assert json.loads((run / "export" / "best_timm" / "config.json").read_text())["label_names"] == HOSTILE


def test_a_prediction_file_with_object_arrays_is_refused(fake_run, cli, tmp_path):
    from vitcli.core.predictions import Predictions

    marker = tmp_path / "planted"
    rng = np.random.default_rng(0)
    good = Predictions(rng.normal(size=(8, 3)), [f"val/{i}" for i in range(8)], ["a", "b", "c"], np.arange(8) % 3)
    a = fake_run(tmp_path / "a", predictions={"val": good})
    b = fake_run(tmp_path / "b", dirs=("predictions",))
    hostile = np.empty(8, dtype=object)
    hostile[0] = Planted(marker)
    np.savez(b / "predictions" / "val.npz", logits=hostile, ids=np.asarray(good.ids),
             class_names=np.asarray(["a", "b", "c"]), source=np.asarray("{}"))
    line = _one_line(cli("ensemble", f"runs=[{a},{b}]", "split=val", "predict_missing=false",
                         f"out={tmp_path / 'out'}", check=False))
    assert f"{b}/predictions/val.npz is not a vitcli predictions file" in line and "allow_pickle" in line
    assert not marker.exists() and not (tmp_path / "out").exists()
