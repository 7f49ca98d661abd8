"""`vitcli train -m hparams_search=optuna`: trials report every epoch, the pruner stops the clearly
worse one (status pruned, fewer epochs), the sweep summary and study plots show it; reruns
resume the study; joblib workers share it."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from hydra_plugins.vitcli_optuna_sweeper.storage import open_storage  # noqa: E402

GOOD, BAD = 3e-3, 1e-9  # on easy synthetic data a good lr is near 100% after one epoch; 1e-9 learns nothing


@pytest.fixture
def search(cli, tiny_overrides, tmp_path):
    """`search(*overrides, **cli_kwargs)`: an optuna sweep of two-epoch tiny jobs on easy synthetic
    data, its study in tmp_path/study.log (name "tiny") -> (process, sweep dir)."""
    fast = [*tiny_overrides, "data.difficulty=easy", "data.num_samples=96", "trainer.threads=1",
            "trainer.progress=none", "trainer.export_safetensors=false"]

    def run(*overrides: str, sweep_dir: Path | None = None, **kwargs):
        sweep_dir = sweep_dir or tmp_path / "sweep"
        proc = cli("train", "-m", *fast, "hparams_search=optuna", f"hydra.sweeper.storage={tmp_path / 'study.log'}",
                   "hydra.sweeper.study_name=tiny", "hydra.sweeper.plots=false", *overrides, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path, **kwargs)
        return proc, sweep_dir

    return run


def new_study(tmp_path: Path, lrs: list[float]):
    """The study, created up front with these learning rates queued: the sweep asks them in order."""
    study = optuna.create_study(study_name="tiny", storage=open_storage(str(tmp_path / "study.log")),
                                direction="maximize")
    for lr in lrs:
        study.enqueue_trial({"optimizer.lr": lr, "regularization.weight_decay": 0.05, "model.drop_path_rate": 0.0})
    return study


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_clearly_worse_trial_is_pruned_and_keeps_its_run(search, cli, tmp_path, read_summary):
    new_study(tmp_path, [GOOD, GOOD, BAD])
    proc, sweep_dir = search("hydra.sweeper.n_trials=3", "hydra/sweeper/pruner=median",
                             "hydra.sweeper.pruner.n_startup_trials=2", "hydra.sweeper.plots=true")
    out = proc.stdout + proc.stderr
    good, bad = sweep_dir / "0", sweep_dir / "2"  # job dir = trial number
    assert read_summary(bad)["status"] == "pruned" and read_summary(bad)["epochs_completed"] == 1
    assert read_summary(bad)["stopped"]["by"] == "optuna"
    assert read_summary(good)["status"] == "completed" and read_summary(good)["epochs_completed"] == 2
    for name in ("checkpoints/last.pt", "checkpoints/best.pt", "plots/curves.png", "metrics.jsonl"):
        assert (bad / name).is_file(), name  # a pruned run keeps what it trained
    # the study: reported every epoch, the bad trial PRUNED with its epoch-1 value
    trials = optuna.load_study(study_name="tiny", storage=open_storage(str(tmp_path / "study.log"))).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert sorted(trials[0].intermediate_values) == [1, 2] and sorted(trials[2].intermediate_values) == [1]
    assert trials[2].value == pytest.approx(read_summary(bad)["best"]["val_top1"])
    assert trials[0].value == pytest.approx(read_summary(good)["best"]["val_top1"])
    assert trials[0].value > trials[2].value
    # the sweep summary lists it as pruned (not failed) with the epochs it trained
    rows = {r["job"]: r for r in read_csv(sweep_dir / "sweep_summary.csv")}
    assert (rows["2"]["status"], rows["2"]["epochs"]) == ("pruned", "1")
    assert (rows["0"]["status"], rows["0"]["epochs"]) == ("completed", "2")
    assert "2 completed, 1 pruned" in out and "failed" not in out.splitlines()[-1]
    # study pictures in the sweep dir (importances need parameters that vary: test_optuna_sweeper.py)
    drawn = {"optimization_history.png", "slice.png", "intermediate_values.png"}
    assert {p.name for p in (sweep_dir / "plots").glob("*.png")} >= drawn
    # `vitcli runs` on the sweep dir lists the trials and redraws the study's plots
    shutil.rmtree(sweep_dir / "plots")
    proc = cli("runs", f"root={sweep_dir}")
    assert "study 'tiny': 3 trials (2 complete, 1 pruned); best trial 0" in proc.stdout
    assert "pruned" in proc.stdout.split("study 'tiny'")[0]  # the table's status column
    assert {p.name for p in (sweep_dir / "plots").glob("*.png")} >= drawn


def test_optuna_config_composes(compose):
    cfg = compose("train", return_hydra_config=True, overrides=["hparams_search=optuna", "hydra/sweeper/pruner=hyperband"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.vitcli_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert sweeper.direction == "maximize" and sweeper.storage == "runs/default/optuna_journal.log"  # a journal
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed == 42
    assert sweeper.pruner._target_ == "optuna.pruners.HyperbandPruner"
    params = dict(sweeper.params)
    assert set(params) == {"optimizer.lr", "regularization.weight_decay", "model.drop_path_rate"}
    task = compose("train", overrides=[f"{key}=0.01" for key in params])  # every searched key is a train option
    assert task.model.drop_path_rate == 0.01


def test_the_default_study_is_a_journal_file_a_rerun_resumes(cli, tiny_overrides, tmp_path):
    """hparams_search=optuna without a storage: a journal file under runs/<name>/ (shareable by SLURM jobs
    on several nodes over NFS, unlike sqlite); the same command with more n_trials adds only the missing."""
    runs = tmp_path / "runs"
    fast = [*tiny_overrides, "data.num_samples=64", "trainer.epochs=1", "trainer.progress=none",
            "trainer.export_safetensors=false", "hparams_search=optuna", "hydra.sweeper.plots=false", "name=tiny",
            f"runs_root={runs}"]
    cli("train", "-m", *fast, "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={tmp_path / 'a'}", cwd=tmp_path)
    journal = runs / "tiny" / "optuna_journal.log"
    assert journal.is_file() and not list(runs.rglob("*.db"))
    proc = cli("train", "-m", *fast, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={tmp_path / 'b'}", cwd=tmp_path)
    assert "1 trials so far" in proc.stdout + proc.stderr
    study = optuna.load_study(study_name="tiny", storage=open_storage(str(journal)))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert sorted(p.name for p in (tmp_path / "b").iterdir() if p.is_dir()) == ["1"]  # only trial 1 ran


@pytest.mark.parametrize("direction", ["minimize", "[maximize,minimize]"])
def test_a_direction_vitcli_train_does_not_have_is_one_line(compose, capsys, direction):
    from vitcli.search.study import check_direction

    cfg = compose("train", return_hydra_config=True,
                  overrides=["hparams_search=optuna", f"hydra.sweeper.direction={direction}"])
    with pytest.raises(SystemExit) as exit_:
        check_direction(cfg)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1
    assert err[0].startswith("vitcli: error: hydra.sweeper.direction=") and "direction=maximize" in err[0]
    check_direction(compose("train", return_hydra_config=True, overrides=["hparams_search=optuna"]))  # fine


def test_a_wrong_direction_stops_the_sweep_in_one_line(cli, tmp_path):
    proc = cli("train", "-m", "hparams_search=optuna", "hydra.sweeper.direction=minimize",
               f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "returns one value to maximize" in lines[0], proc.stderr
    assert not (tmp_path / "s").exists()  # stopped before the first trial


@pytest.mark.slow
def test_rerun_resumes_the_study_and_a_failed_trial_is_recorded(search, tmp_path):
    _, s1 = search("hydra.sweeper.n_trials=2", sweep_dir=tmp_path / "s1")
    _, s2 = search("hydra.sweeper.n_trials=3", sweep_dir=tmp_path / "s2")  # the same command, one trial more
    study = optuna.load_study(study_name="tiny", storage=open_storage(str(tmp_path / "study.log")))
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert sorted(p.name for p in s2.iterdir() if p.name.isdigit()) == ["2"]  # only the missing trial ran
    # a trial that fails (a bad optimizer name at set-up) is a FAIL trial, not a crash
    proc, s3 = search("hydra.sweeper.n_trials=4", "optimizer.name=nope", sweep_dir=tmp_path / "s3", check=False)
    assert proc.returncode == 1 and "1 of 1 jobs failed" in proc.stderr
    study = optuna.load_study(study_name="tiny", storage=open_storage(str(tmp_path / "study.log")))
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3 + ["FAIL"]
    assert read_csv(s3 / "sweep_summary.csv")[0]["status"] == "failed"


@pytest.mark.slow
def test_two_joblib_workers_share_one_study(search, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    new_study(tmp_path, [GOOD, GOOD])
    _, sweep_dir = search("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2",
                          "hydra.sweeper.n_trials=2", "hydra/sweeper/pruner=median")
    trials = optuna.load_study(study_name="tiny", storage=open_storage(str(tmp_path / "study.log"))).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2
    # both jobs ran in joblib's worker processes and reported every epoch through the storage
    assert all(sorted(t.intermediate_values) == [1, 2] for t in trials)
    assert all(json.loads((sweep_dir / str(n) / "summary.json").read_text())["status"] == "completed" for n in (0, 1))


def test_study_plots_go_to_wandb_in_the_sweeps_group(tmp_path, monkeypatch, compose):
    import sys
    import types

    from vitcli.search.study import log_to_wandb

    logged: dict = {}

    class FakeRun:
        summary: dict = {}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def log(self, data):
            logged.update(data)

    def init(**kwargs):
        logged["init"] = kwargs
        return FakeRun()

    fake = types.SimpleNamespace(init=init, Image=lambda path: ("image", path), Settings=lambda **kw: kw)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    study = optuna.create_study(study_name="s", direction="maximize")
    study.enqueue_trial({"x": 1.0})
    study.optimize(lambda t: t.suggest_float("x", 0, 2), n_trials=2)
    sweep_dir = tmp_path / "2026-12-01_12-00-00"
    images = [tmp_path / "optimization_history.png", tmp_path / "slice.png"]
    log_to_wandb(compose("train", overrides=["logger=csv"]), sweep_dir, study, images)
    assert not logged  # logger=csv: nothing goes to W&B
    log_to_wandb(compose("train", overrides=["logger=wandb"]), sweep_dir, study, images)
    assert logged["init"]["group"] == "default/2026-12-01_12-00-00" and logged["init"]["job_type"] == "sweep"
    assert logged["study/optimization_history"] == ("image", str(images[0])) and "study/slice" in logged
    assert FakeRun.summary["best_trial"] in (0, 1) and "best/x" in FakeRun.summary


def test_trial_pruner_reaches_its_trial_from_the_environment(tmp_path, monkeypatch, compose):
    """A child process (a torchrun rank of a trainer.devices=N trial) has no Hydra sweep config:
    it finds its trial through the VITCLI_OPTUNA_TRIAL the job put in the environment."""
    from hydra_plugins.vitcli_optuna_sweeper.trial import TrialLink
    from vitcli.engine.stopping import TrialPruner, create_stoppers

    journal = str(tmp_path / "study.log")
    study = optuna.create_study(study_name="env", storage=open_storage(journal), direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    for value in (90.0, 95.0):  # two finished trials set the median at step 1
        trial = study.ask()
        trial.report(value, 1)
        study.tell(trial, value)
    numbers = [study.ask().number for _ in range(2)]
    pruner = {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 1}
    cfg = compose("train")
    assert create_stoppers(cfg) == []  # outside a sweep: no pruner
    for number, value, pruned in ((numbers[0], 99.0, False), (numbers[1], 10.0, True)):
        monkeypatch.setenv(*TrialLink("env", journal, number, pruner).env().popitem())
        [stopper] = create_stoppers(cfg)
        assert isinstance(stopper, TrialPruner)
        decision = stopper.after_epoch(1, {"val_top1": value - 5, "ema_top1": value})  # EMA is the better one
        assert (decision is not None) == pruned
        if pruned:
            assert decision.status == "pruned" and decision.by == "optuna" and "10.00" in decision.reason
    trials = optuna.load_study(study_name="env", storage=open_storage(journal)).trials
    assert [t.state.name for t in trials[2:]] == ["RUNNING", "PRUNED"]
    assert trials[2].intermediate_values == {1: 99.0} and trials[3].value == 10.0
