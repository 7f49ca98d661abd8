"""Hydra multirun: sweep_summary.csv, failed jobs recorded, launchers (optuna: test_optuna_search.py)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest


@pytest.fixture
def sweep(cli, tiny_overrides, tmp_path):
    """`sweep(*overrides, **cli_kwargs)`: `vitcli train -m` of one-epoch tiny jobs into tmp_path/sweep
    (the sweep machinery is under test, not the model) -> (process, sweep dir)."""
    fast = [*tiny_overrides, "trainer.epochs=1", "data.num_samples=64", "trainer.threads=1", "trainer.progress=none"]

    def run(*overrides: str, **kwargs):
        sweep_dir = tmp_path / "sweep"
        proc = cli("train", "-m", *fast, *overrides, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path, **kwargs)
        return proc, sweep_dir

    return run


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_grid_2x2_with_a_failing_job_writes_ranked_sweep_summary(sweep, tmp_path):
    # one axis holds a bad learning rate: those jobs fail (UserError at set-up), the sweep goes on
    proc, sweep_dir = sweep("optimizer.lr=-1,1e-3", "regularization=none,light")
    assert "Traceback" not in proc.stdout + proc.stderr
    rows = read_csv(sweep_dir / "sweep_summary.csv")
    assert len(rows) == 4
    # the swept keys get their own columns; all four combinations are there
    assert {(r["optimizer.lr"], r["regularization"]) for r in rows} == {
        ("-1", "none"), ("-1", "light"), ("0.001", "none"), ("0.001", "light")}
    # ranked by val_top1: the completed jobs first, best first, then the failed ones
    assert [r["status"] for r in rows] == ["completed", "completed", "failed", "failed"]
    assert float(rows[0]["val_top1"]) >= float(rows[1]["val_top1"])
    for r in rows[:2]:
        job = Path(r["run_dir"])
        assert json.loads((job / "summary.json").read_text())["status"] == "completed"
        assert (job / "plots" / "curves.png").is_file()
        assert "optimizer.lr=0.001" in r["overrides"]
    for r in rows[2:]:
        assert "must be positive" in r["error"] and r["val_top1"] == ""
        summary = json.loads((Path(r["run_dir"]) / "summary.json").read_text())
        assert summary["status"] == "failed" and "optimizer.lr" in summary["error"]
    assert "sorted by val_top1" in proc.stdout and "2 of 4 jobs failed" in proc.stdout
    assert proc.returncode == 0 and "2 of 4 jobs failed" in (proc.stdout + proc.stderr).strip().splitlines()[-1]


def test_sweep_in_which_every_job_failed_exits_non_zero(sweep, tmp_path):
    proc, sweep_dir = sweep("optimizer.lr=-1,-2", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("vitcli: error: 2 of 2 jobs failed")
    assert "Traceback" not in proc.stdout + proc.stderr
    assert [r["status"] for r in read_csv(sweep_dir / "sweep_summary.csv")] == ["failed", "failed"]


def test_summary_ranks_failed_and_missing_jobs_last(tmp_path):
    from vitcli.search.sweep import collect, rank

    for num, (lr, status, top1) in enumerate([("1", "completed", 10.0), ("2", "failed", None), ("3", "completed", 50.0)]):
        job = tmp_path / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- optimizer.lr={lr}\n- data=synthetic\n")
        best = {"val_top1": top1, "epoch": 1} if top1 is not None else {}
        (job / "summary.json").write_text(json.dumps({"status": status, "best": best}))
    (tmp_path / "3" / ".hydra").mkdir(parents=True)  # a job killed before writing anything
    rows, keys = collect(tmp_path)
    assert keys == ["optimizer.lr"]  # data=synthetic is the same everywhere: not a swept key
    ranked = rank(rows, "val_top1", "max")
    assert [r["job"] for r in ranked] == ["2", "0", "1", "3"]
    assert ranked[-1]["status"] == "missing"


def test_lr_grid_composes_into_sweeper_params(compose):
    cfg = compose("train", return_hydra_config=True, overrides=["hparams_search=lr_grid"])
    params = cfg.hydra.sweeper.params
    assert "optimizer.lr" in params and "," in params["optimizer.lr"]


def test_sweep_summary_callback_is_registered(compose):
    cfg = compose("train", return_hydra_config=True, overrides=[])
    assert cfg.hydra.callbacks.sweep_summary._target_ == "vitcli.search.sweep.SweepSummary"
    assert compose("train").optimizer.lr > 0  # and the task config is untouched


@pytest.mark.parametrize("launcher,target", [("submitit_slurm", "SlurmLauncher"), ("slurm", "SlurmLauncher"),
                                             ("joblib", "JoblibLauncher")])
def test_launcher_configs_compose(compose, launcher, target):
    pytest.importorskip(f"hydra_plugins.hydra_{'joblib' if launcher == 'joblib' else 'submitit'}_launcher")
    cfg = compose("train", return_hydra_config=True, overrides=[f"hydra/launcher={launcher}"])
    assert cfg.hydra.launcher._target_.endswith(target)
    if launcher == "slurm":  # vitcli's preset: one GPU per job, logs beside the sweep
        assert cfg.hydra.launcher.gpus_per_node == 1
        assert cfg.hydra.launcher.submitit_folder.endswith(".submitit/%j")
