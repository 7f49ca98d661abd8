"""trainer.early_stop_patience=N ends a run after N epochs without a better selection metric."""

from __future__ import annotations

import pytest

from vitcli.engine.stopping import EarlyStopping


def test_early_stopping_counts_epochs_without_improvement():
    stopper = EarlyStopping(patience=2)
    tops = [50.0, 60.0, 60.0, 55.0, 70.0, 69.0, 70.0]
    decisions = [stopper.after_epoch(e, {"val_top1": t}) for e, t in enumerate(tops, start=1)]
    assert [d is not None for d in decisions] == [False, False, False, True, False, False, True]
    assert decisions[3].status == "completed" and "epoch 2" in decisions[3].reason


STALLED = ["trainer.epochs=8", "trainer.early_stop_patience=2", "scheduler=constant", "optimizer.lr=1e-12",
           "scheduler.warmup_epochs=0"]


def _epochs_logged(run) -> list[int]:
    import json

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["epoch"] for r in records if r.get("kind") == "epoch"]


def test_a_run_that_stops_improving_stops_early_and_stays_stopped(make_trainer, cli, tmp_path, read_summary):
    # lr 1e-12: the weights barely move, so epoch 1 stays the best and patience 2 ends the run after epoch 3
    run = tmp_path / "run"
    make_trainer(run, *STALLED).fit()
    summary = read_summary(run)
    assert summary["status"] == "completed" and summary["epochs_completed"] == 3
    assert summary["stopped"]["by"] == "early_stop" and summary["stopped"]["epoch"] == 3
    assert summary["best"]["epoch"] == 1
    # the same command again (a requeued job, a rerun): the run stays stopped, nothing more trains
    make_trainer(run, *STALLED).fit()
    again = read_summary(run)
    assert again["epochs_completed"] == 3 and again["stopped"] == summary["stopped"] and _epochs_logged(run) == [1, 2, 3]
    # to train on, deliberately: resume with a larger patience (3: one more epoch without improvement)
    cli("train", f"resume={run}", "trainer.early_stop_patience=3", "trainer.progress=none")
    more = read_summary(run)
    assert more["epochs_completed"] == 4 and more["stopped"]["epoch"] == 4 and _epochs_logged(run) == [1, 2, 3, 4]


def test_patience_must_be_positive(compose):
    from vitcli.core.errors import UserError
    from vitcli.engine.stopping import create_stoppers

    assert create_stoppers(compose("train", [])) == []
    with pytest.raises(UserError, match="trainer.early_stop_patience=-1"):
        create_stoppers(compose("train", ["trainer.early_stop_patience=-1"]))
