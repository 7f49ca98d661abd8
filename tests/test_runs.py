"""`vitcli runs`: the run table, read from summary.json files only; plots/curves.png."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf


@pytest.fixture
def summary_run(fake_run):
    """`summary_run(root, rel, top1, status, model, wall)`: a fake run at root/rel with its summary.json."""

    def make(root: Path, rel: str, top1: float | None, status: str = "completed", model: str = "vit_t",
             wall: float = 10.0) -> Path:
        best = {"epoch": 3, "val_top1": top1, "val_top5": 99.0, "val_loss": 0.5} if top1 is not None else {}
        summary = {"status": status, "experiment": rel.split("/")[0], "model": model, "data": "digits",
                   "epochs": 5, "epochs_completed": 3, "best": best, "wall_time_s": wall}
        return fake_run(root / rel, summary=summary, dirs=("checkpoints", ".hydra"))

    return make


def runs_cfg(root: Path, **kw):
    from vitcli.core.task_schemas import RunsConfig

    return OmegaConf.merge(OmegaConf.structured(RunsConfig), {"root": str(root), **kw})


def test_lists_hundreds_of_runs_sorted_filtered_and_limited(summary_run, tmp_path):
    from vitcli.commands.runs import list_runs

    for i in range(300):
        summary_run(tmp_path, f"exp{i % 3}/2026-01-01_00-00-{i:03d}", top1=float(i % 97),
                 model="swin_t" if i % 2 else "vit_t")
    summary_run(tmp_path, "exp0/multirun/stamp/0", top1=None, status="failed")
    # a run's own folders are not searched: a summary.json in there is not another run
    (tmp_path / "exp1/2026-01-01_00-00-001/checkpoints/summary.json").write_text("{}")

    rows = list_runs(runs_cfg(tmp_path))
    assert len(rows) == 301
    top1 = [r["val_top1"] for r in rows[:-1]]
    assert top1 == sorted(top1, reverse=True) and rows[0]["val_top1"] == 96.0
    assert rows[-1]["status"] == "failed"  # no metric: last, whatever the order

    assert [r["val_top1"] for r in list_runs(runs_cfg(tmp_path, sort="-val_top1"))][:2] == [0.0, 0.0]
    assert {r["model"] for r in list_runs(runs_cfg(tmp_path, filter="swin*"))} == {"swin_t"}
    assert {r["status"] for r in list_runs(runs_cfg(tmp_path, filter="fail"))} == {"failed"}
    assert len(list_runs(runs_cfg(tmp_path, filter="exp2/*", limit=5))) == 5
    assert list_runs(runs_cfg(tmp_path, filter="nothing-like-this")) == []


def test_cli_table_points_to_curves(cli, tiny_run):
    proc = cli("runs", f"root={tiny_run.parent}")
    assert tiny_run.name in proc.stdout and "completed" in proc.stdout
    assert "plots/curves.png" in proc.stdout
    assert (tiny_run / "plots" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args,needle", [(["root=nowhere"], "root=nowhere"), (["sort=bogus"], "sort=bogus")])
def test_bad_arguments_are_one_line_errors(summary_run, cli, tmp_path, args, needle):
    summary_run(tmp_path, "exp/a", top1=1.0)
    proc = cli("runs", f"root={tmp_path}", *args, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_runs_writes_nothing(summary_run, cli, tmp_path):
    summary_run(tmp_path, "exp/a", top1=1.0)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    cli("runs", "root=.", cwd=tmp_path)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_plot_curves_from_metrics(tmp_path):
    from vitcli.viz.plots import plot_curves

    assert plot_curves(tmp_path) is None  # nothing logged yet: no plot, no error
    lines = [{"kind": "step", "epoch": 1, "global_step": s, "train_loss": 2.0, "lr": 1e-3 * s} for s in (1, 2, 3, 4)]
    lines += [{"kind": "epoch", "epoch": e, "train_loss": 2.0 / e, "val_loss": 2.1 / e, "val_top1": 10.0 * e,
               "val_top5": 50.0 + e, "lr": 1e-3} for e in (1, 2)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    out = plot_curves(tmp_path, steps_per_epoch=2)
    assert out == tmp_path / "plots" / "curves.png" and out.read_bytes()[:4] == b"\x89PNG"


# ---- run=: what a user types (core/runs.py resolve_run) ----

@pytest.fixture
def typed_runs(fake_run, tmp_path):
    """runs/ with two experiments; the newest run (by when its config.yaml was written) is not the one
    that sorts last by name, so name order and age order disagree."""
    import os

    root = tmp_path / "runs"
    made = {}
    for age, rel in enumerate(["exp/2026-01-02_00-00-00", "exp/2026-01-01_00-00-00", "other/2026-01-03_00-00-00",
                               "exp/multirun/2026-01-04_00-00-00/0"]):
        made[rel] = fake_run(root / rel)
        stamp = 1_700_000_000 - 1000 * age  # the first listed is the newest
        os.utime(made[rel] / "config.yaml", (stamp, stamp))
    return root, made


def test_run_forms_resolve_to_one_run(typed_runs, monkeypatch):
    from vitcli.core.run_paths import resolve_run

    root, made = typed_runs
    monkeypatch.chdir(root.parent)

    def resolved(typed: str) -> str:
        return str(resolve_run(typed, root).resolve().relative_to(root.resolve()))

    assert resolved("latest") == "exp/2026-01-02_00-00-00"
    assert resolved("exp") == "exp/2026-01-02_00-00-00"  # an experiment name: its newest run
    assert resolved("runs/exp") == "exp/2026-01-02_00-00-00"  # the same folder, as a path
    assert resolved("other") == "other/2026-01-03_00-00-00"
    assert resolved("runs/exp/2026-01-01") == "exp/2026-01-01_00-00-00"  # a prefix, from here
    assert resolved("exp/2026-01-01") == "exp/2026-01-01_00-00-00"  # a prefix, from the runs root
    assert resolved("2026-01-03") == "other/2026-01-03_00-00-00"  # a prefix of a run's name
    assert resolved(str(made["exp/2026-01-01_00-00-00"])) == "exp/2026-01-01_00-00-00"  # a run dir itself


@pytest.mark.parametrize("typed, needles", [
    ("runs/exp/2026", ["fits 2 runs: runs/exp/2026-01-02_00-00-00, runs/exp/2026-01-01_00-00-00;"]),  # newest first
    ("2026-01-0", ["fits 3 runs", "runs/other/2026-01-03_00-00-00"]),  # by name: the multirun job is named 0
    ("nothing", ["no such directory", "newest under runs/: runs/exp/2026-01-02_00-00-00"]),
])
def test_ambiguous_or_missing_run_is_one_line_naming_candidates(typed_runs, monkeypatch, typed, needles):
    from vitcli.core.errors import UserError
    from vitcli.core.run_paths import resolve_run

    root, _ = typed_runs
    monkeypatch.chdir(root.parent)
    with pytest.raises(UserError) as err:
        resolve_run(typed, "runs")
    message = str(err.value)
    assert len(message.splitlines()) == 1 and all(n in message for n in needles), message


def test_latest_without_runs_says_how_to_make_one(tmp_path):
    from vitcli.core.errors import UserError
    from vitcli.core.run_paths import resolve_run

    with pytest.raises(UserError, match=r"run=latest: no run under .*vitcli train"):
        resolve_run("latest", tmp_path / "runs")


def test_commands_take_latest_and_names(cli, tiny_run, tmp_path):
    """eval through the CLI with run=latest and run=<experiment>; train resume=<experiment> continues
    that run; a resume= that names nothing stops before Hydra creates any folder."""
    root = tmp_path / "runs"
    run = Path(shutil.copytree(tiny_run, root / "tiny" / "2026-01-01_00-00-00"))
    proc = cli("eval", "run=latest", f"runs_root={root}", "save=false")
    assert f"run=latest: {run}" in proc.stdout and "top1" in proc.stdout
    assert f"run=tiny: {run}" in cli("eval", "run=tiny", f"runs_root={root}", "save=false").stdout

    proc = cli("train", "resume=tiny", f"runs_root={root}", "trainer.epochs=3", cwd=tmp_path)
    assert "resumed from" in proc.stdout and json.loads((run / "summary.json").read_text())["epochs_completed"] == 3

    before = sorted(tmp_path.rglob("*"))
    proc = cli("train", "resume=nothere", f"runs_root={root}", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "resume=nothere: no such directory" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and sorted(tmp_path.rglob("*")) == before


def test_ensemble_members_resolve_like_run(typed_runs, monkeypatch, cli):
    from vitcli.commands.ensemble import typed_members
    from vitcli.core.task_schemas import EnsembleConfig

    root, made = typed_runs
    monkeypatch.chdir(root.parent)
    cfg = OmegaConf.merge(OmegaConf.structured(EnsembleConfig),
                          {"runs": ["latest", "other", "runs/exp/multirun/2026-01-04_00-00-00", "runs/*/2026*"]})
    typed_members(cfg)
    members = list(cfg.runs)
    assert [Path(m).resolve() for m in members[:2]] == [made["exp/2026-01-02_00-00-00"].resolve(),
                                                        made["other/2026-01-03_00-00-00"].resolve()]
    assert members[2:] == ["runs/exp/multirun/2026-01-04_00-00-00", "runs/*/2026*"]  # paths and globs kept
    proc = cli("ensemble", "runs=[latest,nothere]", cwd=root.parent, check=False)  # the command resolves them
    assert proc.returncode == 2 and "runs=nothere: no such directory, and no run under runs/" in proc.stderr
