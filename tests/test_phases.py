"""Where a run's time went (summary.json's phases, the end-of-run table, `vitcli runs`), and
trainer.eval_interval: which epochs are evaluated and what early stopping and pruning count."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

PHASES = {"startup", "data_wait", "step", "eval", "checkpoint", "plots_logging", "teardown"}


def epochs_of(run_dir: Path) -> list[dict]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") == "epoch"]


def assert_phases_add_up(summary: dict) -> None:
    phases, wall = summary["phases"], summary["wall_s"]
    assert set(phases) == PHASES and all(v >= 0 for v in phases.values())
    assert sum(phases.values()) == pytest.approx(wall, rel=0.01, abs=0.05)  # every second is charged to one phase


def test_a_run_records_where_its_time_went(tiny_run, read_summary):
    summary = read_summary(tiny_run)  # 2 epochs, evaluated and saved after each
    assert_phases_add_up(summary)
    counts = summary["phase_counts"]
    assert counts["eval"] == 2 and summary["phases"]["eval"] > 0
    assert counts["checkpoint"] == 2 and summary["phases"]["checkpoint"] > 0
    assert summary["phases"]["step"] > 0 and summary["phases"]["startup"] > 0


@pytest.fixture(scope="module")
def interval_run(tmp_path_factory, train_tiny):
    """3 epochs with trainer.eval_interval=2: evaluated after epochs 2 and 3 (the last)."""
    run_dir = tmp_path_factory.mktemp("interval") / "run"
    proc = train_tiny(run_dir, "trainer.epochs=3", "trainer.eval_interval=2")
    return run_dir, proc


def test_eval_interval_evaluates_every_nth_epoch_and_the_last(interval_run, read_summary):
    run_dir, _ = interval_run
    records = epochs_of(run_dir)
    assert [r["epoch"] for r in records if r["val_top1"] is not None] == [2, 3]
    assert records[0]["val_top1"] is None and "val_top1" in (run_dir / "metrics.csv").read_text().splitlines()[0]
    summary = read_summary(run_dir)
    assert summary["phase_counts"]["eval"] == 2 and summary["phase_counts"]["checkpoint"] == 3
    assert summary["best"]["epoch"] in (2, 3)  # best.pt follows evaluated epochs only
    assert_phases_add_up(summary)


def test_the_end_of_a_run_prints_the_phase_table(interval_run):
    _, proc = interval_run
    out = proc.stdout + proc.stderr
    assert "where the time went" in out
    assert all(name in out for name in PHASES)


def test_a_rerun_that_trains_nothing_records_no_evaluation_and_no_save(tiny_run_copy, cli, read_summary):
    cli("train", f"resume={tiny_run_copy}")  # already finished: nothing to train
    summary = read_summary(tiny_run_copy)
    assert summary["phases"]["eval"] == 0 and "eval" not in summary["phase_counts"]
    assert "checkpoint" not in summary["phase_counts"] and summary["phases"]["step"] == 0
    assert_phases_add_up(summary)


def test_runs_shows_the_non_step_share(tiny_run, cli, read_summary):
    from vitcli.core.phases import non_step_share

    share = non_step_share(read_summary(tiny_run))
    assert 0 < share < 1
    proc = cli("runs", f"root={tiny_run.parent}", "filter=tiny")
    assert "non-step" in proc.stdout and f"{100 * share:.1f}%" in proc.stdout


def test_the_clock_charges_every_moment_to_one_phase():
    from vitcli.core.phases import PhaseClock

    clock = PhaseClock()
    clock.switch("step")
    with clock.phase("eval"):
        time.sleep(0.02)
    assert clock.current == "step"
    record = clock.record()
    assert record["phase_counts"] == {"eval": 1} and record["phases"]["eval"] >= 0.02
    assert sum(record["phases"].values()) == pytest.approx(record["wall_s"], abs=1e-3)


@pytest.mark.parametrize("interval, evaluated", [(1, [1, 2, 3, 4, 5]), (2, [2, 4, 5]), (3, [3, 5]), (9, [5])])
def test_which_epochs_are_evaluated(interval, evaluated):
    from vitcli.engine.epoch_report import evaluates

    assert [e for e in range(1, 6) if evaluates(e, 5, interval)] == evaluated


def test_a_zero_eval_interval_is_refused():
    from vitcli.core.errors import UserError
    from vitcli.engine.epoch_report import eval_interval

    with pytest.raises(UserError, match="trainer.eval_interval=0 must be >= 1"):
        eval_interval(OmegaConf.create({"eval_interval": 0}))


def test_the_default_eval_interval_follows_the_epochs():
    """trainer.eval_interval=null (the default): epochs // 8, at least 1 and at most 5; a number is kept."""
    from vitcli.engine.epoch_report import eval_interval

    auto = {epochs: eval_interval(OmegaConf.create({"epochs": epochs, "eval_interval": None}))
            for epochs in (1, 3, 15, 16, 24, 40, 300)}
    assert auto == {1: 1, 3: 1, 15: 1, 16: 2, 24: 3, 40: 5, 300: 5}
    assert eval_interval(OmegaConf.create({"epochs": 40, "eval_interval": 1})) == 1


def test_the_collector_paused_at_the_command_start_runs_again_once_the_run_is_built(make_trainer, tmp_path):
    """cli.py pauses the collector for `vitcli train`; the built Trainer turns it back on (only when it
    was paused there: a collector someone else turned off stays off)."""
    import gc

    from vitcli.core import startup_gc

    assert gc.isenabled()
    try:
        startup_gc.pause()
        assert not gc.isenabled()
        make_trainer(tmp_path / "run")
        assert gc.isenabled()
        gc.disable()
        startup_gc.resume()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_first_resume_freezes_the_start_up_objects_and_later_ones_collect(monkeypatch):
    """The process's first run freezes what start-up made (no 0.3 s full collection); a second run in
    the same process collects instead, so earlier runs' garbage is never frozen in."""
    import gc

    from vitcli.core import startup_gc

    monkeypatch.setattr(startup_gc, "_froze", False)
    before = gc.get_freeze_count()
    try:
        startup_gc.pause()
        junk = [[] for _ in range(1000)]  # made while paused: frozen with the rest
        startup_gc.resume()
        frozen = gc.get_freeze_count()
        assert gc.isenabled() and frozen >= before + 1000
        cycle = [None]
        cycle[0] = cycle  # garbage only a collection frees
        probe = weakref_to(cycle)
        del cycle
        startup_gc.pause()
        startup_gc.resume()
        assert gc.get_freeze_count() == frozen and probe() is None  # collected, not frozen
        assert len(junk) == 1000
    finally:
        gc.unfreeze()  # hand this test process its objects back
        gc.enable()


def weakref_to(obj):
    """A weak reference to a list (lists take none): through a subclass instance kept in it."""
    import weakref

    class Anchor:
        pass

    anchor = Anchor()
    obj.append(anchor)
    return weakref.ref(anchor)


def test_a_train_command_that_stops_before_its_run_is_built_leaves_the_collector_on(cli):
    """In-process callers (tests, notebooks) keep their collector after a refused `vitcli train`."""
    import gc

    bad = cli("train", "trainer.eval_interval=0", check=False)
    assert bad.returncode != 0 and "eval_interval" in bad.stderr
    assert gc.isenabled()


def test_early_stopping_patience_counts_evaluations():
    from vitcli.engine.stopping import EarlyStopping

    stopper = EarlyStopping(patience=2)  # eval_interval=2: evaluated epochs 2, 4, 6
    assert stopper.after_epoch(2, {"val_top1": 50.0}) is None
    assert stopper.after_epoch(4, {"val_top1": 40.0}) is None  # 2 epochs, but 1 evaluation without a better one
    decision = stopper.after_epoch(6, {"val_top1": 45.0})
    assert decision is not None and "for 2 evaluations" in decision.reason


def test_a_resumed_run_replays_only_evaluated_epochs_into_patience():
    from vitcli.engine.stopping import EarlyStopping

    history = [{"epoch": 1, "val_top1": None}, {"epoch": 2, "val_top1": 50.0}, {"epoch": 3, "val_top1": None},
               {"epoch": 4, "val_top1": 40.0}]
    assert EarlyStopping(patience=2).resume(history) is None
    assert EarlyStopping(patience=1).resume(history) is not None


def test_pruning_reports_at_the_evaluated_epoch():
    from vitcli.engine.stopping import TrialPruner

    class Trial:
        reported: list = []

        def report(self, value, step):
            self.reported.append((step, value))

        def should_prune(self):
            return False

    trial = Trial()
    pruner = TrialPruner(trial)
    pruner.after_epoch(2, {"val_top1": 10.0})
    pruner.after_epoch(4, {"val_top1": 20.0})
    assert trial.reported == [(2, 10.0), (4, 20.0)]  # epochs: pruner settings count epochs


def test_the_save_in_flight_is_written_before_a_stopped_run_ends(make_trainer, tmp_path, monkeypatch):
    """A stop (signal, failure, Ctrl-C) ends the run through finish(): the background write is joined there."""
    from vitcli.core.checkpoint import save_checkpoint
    from vitcli.engine import checkpoints

    def slow_save(state, path):
        time.sleep(0.5)
        save_checkpoint(state, path)

    monkeypatch.setattr(checkpoints, "save_checkpoint", slow_save)
    trainer = make_trainer(tmp_path / "run")
    trainer.state.run_dir.mkdir(parents=True)
    trainer.state.save_last()
    trainer.state.finish("interrupted")
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    assert trainer.state.clock.record()["phases"]["checkpoint"] >= 0.4  # the wait is charged to checkpoint


def test_curves_wait_their_interval_and_skip_a_redraw_the_end_will_make(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from vitcli.engine import run_state as RS

    drawn = []
    monkeypatch.setattr(RS, "try_plot_curves", lambda run_dir: drawn.append(run_dir))
    state = SimpleNamespace(main=True, run_dir=tmp_path, curves_drawn=time.monotonic(), pace=None, epoch=3)
    RS.RunState.draw_curves(state)
    assert drawn == []  # not yet CURVES_EVERY_S since the start
    state.curves_drawn -= RS.CURVES_EVERY_S
    RS.RunState.draw_curves(state, left_s=RS.CURVES_EVERY_S / 2)
    assert drawn == []  # due, but the run ends sooner: its last redraw comes then
    RS.RunState.draw_curves(state, left_s=RS.CURVES_EVERY_S * 2)
    assert drawn == [tmp_path]
    RS.RunState.draw_curves(state, force=True, left_s=0.0)
    assert len(drawn) == 2  # the end always redraws
    # the estimate: the pace of this process's epochs since the first epoch end it saw
    assert RS.RunState.seconds_left(state, 10) is None and state.pace[0] == 3
    state.epoch, state.pace = 5, (3, time.monotonic() - 20.0)  # two epochs in 20 s
    assert 49.0 < RS.RunState.seconds_left(state, 10) < 52.0  # five left at ~10 s each
