"""End to end through the real CLI: a tiny run, its directory, eval, reproducibility."""

from __future__ import annotations

import json

import torch


def test_run_directory_contract(read_summary, tiny_run):
    for name in ("config.yaml", "metrics.jsonl", "metrics.csv", "summary.json", "train.log",
                 "checkpoints/best.pt", "checkpoints/last.pt", ".hydra/config.yaml"):
        assert (tiny_run / name).is_file(), name
    summary = read_summary(tiny_run)
    assert summary["status"] == "completed"
    assert summary["epochs_completed"] == 2
    assert summary["train_images_per_s"] > 0 and summary["wall_time_s"] > 0
    assert 0 <= summary["best"]["val_top1"] <= 100
    assert summary["final"]["epoch"] == 2
    records = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    steps = [r for r in records if r["kind"] == "step"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert steps and {"train_loss", "lr", "images_per_s"} <= set(steps[0])
    assert "${" not in (tiny_run / "config.yaml").read_text()  # resolved
    assert "epoch 2/2" in (tiny_run / "train.log").read_text()


def test_eval_matches_summary(cli, read_summary, tiny_run):
    proc = cli("eval", f"run={tiny_run}", "save=false")  # tiny_run is shared: write nothing into it
    best = read_summary(tiny_run)["best"]
    assert f"top1 {best['val_top1']:.2f}" in proc.stdout
    assert f"top5 {best['val_top5']:.2f}" in proc.stdout


def test_eval_in_process_equals_summary_exactly(read_summary, tiny_run):
    from vitcli.engine.inference import run_split

    result = run_split(tiny_run, checkpoint="best", device="cpu")[0]
    assert result["top1"] == read_summary(tiny_run)["best"]["val_top1"]
    last = run_split(tiny_run, checkpoint="last", device="cpu")[0]
    assert last["top1"] == read_summary(tiny_run)["final"]["val_top1"]


def test_eval_without_checkpoint_is_one_line(cli, tmp_path, tiny_run):
    run = tmp_path / "nockpt"
    run.mkdir()
    (run / "config.yaml").write_text((tiny_run / "config.yaml").read_text())
    proc = cli("eval", f"run={run}", check=False)
    assert proc.returncode == 2
    assert "no checkpoints/best.pt" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_same_seed_same_weights(train_tiny, tmp_path):
    train_tiny(tmp_path / "a", "trainer.epochs=1")
    train_tiny(tmp_path / "b", "trainer.epochs=1")
    wa = torch.load(tmp_path / "a/checkpoints/last.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    train_tiny(tmp_path / "c", "trainer.epochs=1", "trainer.seed=7")
    wc = torch.load(tmp_path / "c/checkpoints/last.pt", weights_only=True)["model"]
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)


def test_plain_progress_lines_when_not_a_terminal(tiny_run):
    log = (tiny_run / "train.log").read_text()
    assert "step 2/" in log and "img/s" in log
    assert "\r" not in log


def test_rerun_in_same_dir_resumes_instead_of_restarting(read_summary, train_tiny, tiny_run_copy):
    run = tiny_run_copy
    proc = train_tiny(run, "trainer.epochs=3")
    assert "resumed from" in proc.stdout
    summary = read_summary(run)
    assert summary["epochs_completed"] == 3
    epochs = [json.loads(l)["epoch"] for l in (run / "metrics.jsonl").read_text().splitlines()
              if json.loads(l)["kind"] == "epoch"]
    assert epochs == [1, 2, 3]


def test_minival_takes_over_model_selection(read_summary, train_tiny, tmp_path):
    from vitcli.engine.inference import run_split

    run = tmp_path / "mini"
    train_tiny(run, "trainer.epochs=1", "data.minival_fraction=0.25", "data.num_samples=200")
    summary = read_summary(run)
    assert summary["selection_split"] == "minival"
    assert summary["minival_samples"] > 0
    assert run_split(run, split="minival", device="cpu")[0]["top1"] == summary["best"]["val_top1"]
