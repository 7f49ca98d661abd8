"""`vitcli runs`: the run table, read from summary.json files only; plots/curves.png."""

from __future__ import annotations

import json
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
