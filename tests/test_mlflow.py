"""logger=mlflow against a real `mlflow server` (sqlite store, artifacts served by the server) on a
loopback port, read back with MlflowClient: a run's params, metric histories, tags and artifacts;
a resume continuing the same MLflow run; a -m optuna sweep as a parent run with one child per
trial (pruned state as a tag); `vitcli eval` adding to the run it read; the MLflow UI showing it
in headless Chromium."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("mlflow")

import services  # noqa: E402

LONG = "x" * 7000  # longer than MLflow's 6000-character param limit


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with services.mlflow_server(tmp_path_factory.mktemp("mlflow_server")) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=server)


@pytest.fixture(scope="module")
def tracked_run(server, train_tiny, tmp_path_factory):
    """One tiny 2-epoch run logged to the server and to TensorBoard (a logger list), shared by the
    tests that read it (eval adds to it: read what it adds by name)."""
    run_dir = tmp_path_factory.mktemp("tracked") / "run"
    train_tiny(run_dir, "logger=[mlflow,tensorboard]", f"logger.mlflow.tracking_uri={server}",
                f"logger.notes={LONG}", "trainer.threads=1", "name=tracked")
    return run_dir


def run_id_of(run_dir: Path) -> str:
    return json.loads((run_dir / "mlflow_run.json").read_text())["run_id"]


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))]


def artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, path)}


def records(run_dir: Path, kind: str) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == kind]


def test_a_run_is_read_back_params_metrics_tags_artifacts(tracked_run, client, server, read_summary):
    record = json.loads((tracked_run / "mlflow_run.json").read_text())
    assert record["tracking_uri"] == server
    run = client.get_run(record["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "tracked"
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    params = run.data.params
    assert params["model.name"] == "vit_pico" and params["optimizer.lr"] == "0.001" and params["trainer.epochs"] == "2"
    # a value over MLflow's limit is cut and marked, never a failed run
    assert len(params["logger.notes"]) == 6000 and params["logger.notes"].endswith("...[truncated]")
    tags = run.data.tags
    assert tags["vitcli.command"] == "train" and tags["vitcli.status"] == "completed"
    assert tags["vitcli.run_dir"] == str(tracked_run.resolve())
    repo = Path(__file__).resolve().parents[1]
    if (repo / ".git").exists():  # a checkout (CI's clone): the commit vitcli's code is at
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
        assert tags["mlflow.source.git.commit"] == head
    # metric histories with their step numbers, equal to metrics.jsonl
    epochs, steps = records(tracked_run, "epoch"), records(tracked_run, "step")
    for key in ("val_top1", "val_loss", "train_loss"):
        assert services.same_series(history(client, run.info.run_id, key), [(r["epoch"], r[key]) for r in epochs])
    assert services.same_series(history(client, run.info.run_id, "step/train_loss"),
                                [(r["global_step"], r["train_loss"]) for r in steps])
    assert len(steps) >= 3 and len({r["train_loss"] for r in steps}) > 1  # numbers that can differ
    best = read_summary(tracked_run)["best"]
    assert run.data.metrics["best_val_top1"] == pytest.approx(best["val_top1"])
    assert run.data.metrics["best_epoch"] == best["epoch"]
    assert {"config.yaml", "summary.json", "metrics.csv", "model.safetensors", "plots"} <= artifacts(client, run.info.run_id)
    assert "plots/curves.png" in artifacts(client, run.info.run_id, "plots")
    local = client.download_artifacts(run.info.run_id, "summary.json", str(tracked_run.parent))
    assert json.loads(Path(local).read_text())["status"] == "completed"


def test_eval_adds_its_metrics_and_files_to_the_run_it_read(tracked_run, client, cli):
    cli("eval", f"run={tracked_run}")
    result = json.loads((tracked_run / "eval" / "val_best.json").read_text())
    run_id = run_id_of(tracked_run)
    assert history(client, run_id, "eval/val_best/top1") == [(2, pytest.approx(result["top1"]))]
    assert history(client, run_id, "eval/val_best/balanced_accuracy") == [(2, pytest.approx(result["balanced_accuracy"]))]
    assert "eval/val_best.json" in artifacts(client, run_id, "eval")
    assert "plots/confusion_val_best.png" in artifacts(client, run_id, "plots")
    assert len(client.search_runs([client.get_run(run_id).info.experiment_id])) == 1  # no second run


def test_a_resumed_run_continues_the_same_mlflow_run(server, client, cli, train_tiny, tmp_path):
    run_dir = tmp_path / "run"
    common = ["logger=[mlflow,tensorboard]", f"logger.mlflow.tracking_uri={server}", "trainer.threads=1",
              "name=resumed"]
    train_tiny(run_dir, *common, "trainer.epochs=1")
    first = run_id_of(run_dir)
    cli("train", f"resume={run_dir}", "trainer.epochs=2", "trainer.threads=1")
    assert run_id_of(run_dir) == first
    exp = client.get_experiment_by_name("resumed")
    assert [r.info.run_id for r in client.search_runs([exp.experiment_id])] == [first]
    run = client.get_run(first)
    assert run.info.status == "FINISHED" and run.data.tags["vitcli.status"] == "completed"
    assert services.same_series(history(client, first, "val_loss"),
                                [(r["epoch"], r["val_loss"]) for r in records(run_dir, "epoch")])
    assert [s for s, _ in history(client, first, "val_top1")] == [1, 2]
    # MLflow never changes a logged param: the resumed value is a tag
    assert run.data.params["trainer.epochs"] == "1" and run.data.tags["vitcli.resumed_with.trainer.epochs"] == "2"
    # TensorBoard: the resumed process writes a second event file; together one series, no repeats
    events = services.tensorboard_events(run_dir / "tensorboard")
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 2
    assert services.same_series([(e.step, e.value) for e in events.Scalars("val/loss")],
                                [(r["epoch"], r["val_loss"]) for r in records(run_dir, "epoch")])


def test_a_sweep_is_a_parent_run_with_a_child_per_trial(server, client, cli, tiny_overrides, tmp_path, read_summary):
    """An optuna sweep of 3 trials (the third clearly worse and pruned) with logger=[mlflow,tensorboard]."""
    optuna = pytest.importorskip("optuna")
    from hydra_plugins.vitcli_optuna_sweeper.storage import open_storage

    journal = str(tmp_path / "study.log")
    study = optuna.create_study(study_name="tiny", storage=open_storage(journal), direction="maximize")
    for lr in (3e-3, 3e-3, 1e-9):  # easy data: a good lr is near 100% after one epoch, 1e-9 learns nothing
        study.enqueue_trial({"optimizer.lr": lr, "regularization.weight_decay": 0.05, "model.drop_path_rate": 0.0})
    sweep_dir = tmp_path / "sweep"
    cli("train", "-m", *tiny_overrides, "data.difficulty=easy", "data.num_samples=96", "trainer.threads=1",
        "trainer.progress=none", "trainer.export_safetensors=false", "hparams_search=optuna",
        f"hydra.sweeper.storage={journal}", "hydra.sweeper.study_name=tiny", "hydra.sweeper.n_trials=3",
        "hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=2", "name=swept",
        "logger=[mlflow,tensorboard]", f"logger.mlflow.tracking_uri={server}", f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path)
    assert read_summary(sweep_dir / "2")["status"] == "pruned"
    parent_id = json.loads((sweep_dir / "mlflow_sweep.json").read_text())["run_id"]
    exp = client.get_experiment_by_name("swept")
    found = {r.info.run_id: r for r in client.search_runs([exp.experiment_id])}
    parent = found.pop(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["vitcli.sweep_dir"] == str(sweep_dir.resolve())
    assert parent.data.params["sweep.optimizer.lr"] == "tag(log, interval(1e-5, 1e-2))"
    assert parent.data.metrics["jobs"] == 3 and parent.data.metrics["pruned_jobs"] == 1
    assert parent.data.metrics["best_val_top1"] == pytest.approx(read_summary(sweep_dir / "0")["best"]["val_top1"])
    assert "sweep_summary.csv" in artifacts(client, parent_id)
    children = sorted(found.values(), key=lambda r: int(r.data.tags["optuna.trial"]))
    assert len(children) == 3 and all(r.data.tags["mlflow.parentRunId"] == parent_id for r in children)
    assert [r.data.tags["optuna.trial"] for r in children] == ["0", "1", "2"]
    assert [r.data.tags["optuna.state"] for r in children] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert [r.data.tags["vitcli.run_dir"] for r in children] == [str((sweep_dir / n).resolve()) for n in "012"]
    assert [len(history(client, r.info.run_id, "val_top1")) for r in children] == [2, 2, 1]
    assert [r.data.params["optimizer.lr"] for r in children] == ["0.003", "0.003", "1e-09"]
    # the same sweep in TensorBoard: one hparams row per job, its lr and final metric
    rows = {n: services.hparams_row(sweep_dir / n / "tensorboard") for n in "012"}
    assert [rows[n]["hparams"]["optimizer.lr"] for n in "012"] == pytest.approx([3e-3, 3e-3, 1e-9])
    assert [rows[n]["hparams"]["status"] for n in "012"] == ["completed", "completed", "pruned"]
    assert rows["2"]["metrics"]["hparams/val_top1"] == pytest.approx(read_summary(sweep_dir / "2")["best"]["val_top1"])


def test_a_server_that_cannot_be_reached_warns_once_and_the_run_goes_on(tmp_path, caplog, monkeypatch):
    from omegaconf import OmegaConf

    from vitcli.engine.tracking import MetricsLogger

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    cfg = OmegaConf.create({"name": "x", "runs_root": str(tmp_path), "logger": {
        "name": "mlflow", "backends": {"mlflow": True}, "mlflow": {"tracking_uri": f"http://127.0.0.1:{services.free_port()}"}}})
    logger = MetricsLogger(tmp_path, cfg)
    logger.log({"kind": "step", "epoch": 1, "global_step": 1, "train_loss": 1.0, "lr": 0.1})
    logger.log_epoch({"epoch": 1, "train_loss": 1.0, "val_top1": 50.0, "val_loss": 1.2, "lr": 0.1})
    logger.finish({"status": "completed", "best": {"val_top1": 50.0}})
    warnings = [m for m in caplog.messages if "mlflow logging is off" in m]
    assert len(warnings) == 1 and len(warnings[0].splitlines()) == 1
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2 and (tmp_path / "metrics.csv").is_file()
    assert not (tmp_path / "mlflow_run.json").exists()


def test_params_are_the_flattened_config_within_mlflows_limits():
    from omegaconf import OmegaConf

    from vitcli.engine.tracking.mlflow_store import TRUNCATED, flat_params

    cfg = OmegaConf.create({"a": {"b": 1, "c": [1, 2], "d": None, "e": {}}, "long": "y" * 9000, "k" * 300: 1,
                            "odd key!": "v"})
    params = flat_params(cfg)
    assert params["a.b"] == "1" and params["a.c"] == "[1, 2]" and params["a.d"] == "None" and params["a.e"] == "{}"
    assert len(params["long"]) == 6000 and params["long"] == "y" * (6000 - len(TRUNCATED)) + TRUNCATED
    assert "odd key_" in params and any(len(k) == 250 and k.endswith(TRUNCATED) for k in params)


@pytest.mark.slow
def test_the_mlflow_ui_shows_the_run_and_its_val_top1(tracked_run, server, client):
    """The run's page in the MLflow UI, rendered by headless Chromium, lists val_top1 with its value."""
    binary, why = services.chromium()
    if binary is None:
        pytest.skip(f"no browser: {why}")
    run = client.get_run(run_id_of(tracked_run))
    url = f"{server}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    dom = services.browse(binary, url, "--dump-dom", "--window-size=1400,1000")
    assert run.info.run_id in dom, dom[-2000:]  # rendered from the server's data, not the page shell
    # the Metrics table: a row with the val_top1 link, then a cell holding its value
    row = re.search(r">val_top1</a>.*?role=\"cell\"[^>]*>.*?title=\"([^\"]+)\"", dom, re.S)
    assert row is not None, dom[-3000:]
    assert float(row.group(1)) == pytest.approx(run.data.metrics["val_top1"], rel=1e-3)


def test_a_sweep_jobs_own_processes_nest_under_the_parent_run_in_the_default_store(tmp_path, monkeypatch):
    """logger.mlflow's default store (sqlite under <runs_root>/mlruns). The torchrun ranks of a
    trainer.devices=N sweep job are not Hydra multirun jobs: rank 0 finds the parent run through
    the sweep dir (Hydra's multirun.yaml is there) and the trial through the environment."""
    from mlflow import MlflowClient
    from omegaconf import OmegaConf

    from vitcli.engine.tracking import MetricsLogger, start_sweep

    cfg = OmegaConf.create({"name": "x", "runs_root": str(tmp_path / "runs"), "model": {"name": "m"},
                            "data": {"name": "d"}, "logger": {"name": "mlflow", "backends": {"mlflow": True},
                                                             "mlflow": {"tracking_uri": None}}})
    sweep_dir = tmp_path / "runs" / "x" / "multirun" / "stamp"
    start_sweep(cfg, sweep_dir)  # what the sweep's callback does before its jobs start
    (sweep_dir / "3").mkdir()
    (sweep_dir / "multirun.yaml").write_text("hydra: {}\n")
    monkeypatch.setenv("VITCLI_OPTUNA_TRIAL", json.dumps({"study_name": "s", "storage": "j", "number": 7, "pruner": {}}))
    logger = MetricsLogger(sweep_dir / "3", cfg)
    logger.log_epoch({"epoch": 1, "val_top1": 12.5})
    logger.finish({"status": "pruned", "best": {"val_top1": 12.5}, "epochs_completed": 1})

    store = tmp_path / "runs" / "mlruns"
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    parent = json.loads((sweep_dir / "mlflow_sweep.json").read_text())["run_id"]
    child = client.get_run(run_id_of(sweep_dir / "3"))
    assert child.data.tags["mlflow.parentRunId"] == parent and child.info.run_name == "stamp/3"
    assert (child.data.tags["optuna.trial"], child.data.tags["vitcli.job"]) == ("7", "3")
    assert child.data.tags["optuna.state"] == "PRUNED" and child.info.status == "FINISHED"
    assert child.info.artifact_uri.startswith((store / "artifacts").as_uri())
    # MLflow 3's UI opens the experiment in its model-training view
    assert client.get_experiment(child.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert history(client, child.info.run_id, "val_top1") == [(1, 12.5)]
