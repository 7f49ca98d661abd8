"""A shared study on a real database: Debian's PostgreSQL, started here on a loopback port with
its own data dir and user, holds an optuna study that two joblib workers run trials of (one is
pruned), and the same server is MLflow's backend store for the sweep's parent and child runs."""

from __future__ import annotations

import json

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("psycopg")
pytest.importorskip("mlflow")
pytest.importorskip("hydra_plugins.hydra_joblib_launcher")

import services  # noqa: E402

GOOD, BAD = 3e-3, 1e-9  # easy synthetic data: a good lr is near 100% after one epoch; 1e-9 learns nothing


@pytest.fixture(scope="module")
def postgres():
    bindir, why = services.postgres_bin()
    if bindir is None:
        pytest.skip(f"no PostgreSQL server: {why}")
    with services.postgres_server(bindir, ["optuna", "mlflow"]) as url:
        yield url


@pytest.mark.slow
def test_two_joblib_workers_share_a_postgres_study_and_mlflow_logs_to_the_same_server(
        postgres, cli, tiny_overrides, tmp_path, read_summary):
    from mlflow import MlflowClient

    storage, tracking = postgres + "optuna", postgres + "mlflow"
    study = optuna.create_study(study_name="pg", storage=storage, direction="maximize")
    for lr in (GOOD, GOOD, BAD, GOOD):  # asked in this order, two at a time
        study.enqueue_trial({"optimizer.lr": lr, "regularization.weight_decay": 0.05, "model.drop_path_rate": 0.0})
    sweep_dir = tmp_path / "sweep"
    cli("train", "-m", *tiny_overrides, "data.difficulty=easy", "data.num_samples=96", "trainer.threads=1",
        "trainer.progress=none", "trainer.export_safetensors=false", "hparams_search=optuna",
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=4",
        f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=pg", "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=2", "name=pg", "logger=mlflow",
        f"logger.mlflow.tracking_uri={tracking}", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)

    trials = optuna.load_study(study_name="pg", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"]
    assert [read_summary(sweep_dir / str(n))["status"] for n in range(4)] == ["completed", "completed", "pruned",
                                                                               "completed"]
    assert trials[2].value == pytest.approx(read_summary(sweep_dir / "2")["best"]["val_top1"])

    client = MlflowClient(tracking_uri=tracking)
    parent_id = json.loads((sweep_dir / "mlflow_sweep.json").read_text())["run_id"]
    runs = client.search_runs([client.get_experiment_by_name("pg").experiment_id])
    children = sorted((r for r in runs if r.info.run_id != parent_id), key=lambda r: int(r.data.tags["optuna.trial"]))
    assert len(runs) == 5 and all(r.data.tags["mlflow.parentRunId"] == parent_id for r in children)
    assert [r.data.tags["optuna.state"] for r in children] == ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"]
    # the two workers ran side by side: trials 0 and 1 overlap in time
    first, second = children[0].info, children[1].info
    assert first.start_time < second.end_time and second.start_time < first.end_time
    # artifacts of a database store default to <runs_root>/mlruns/artifacts
    assert (tmp_path / "runs" / "mlruns" / "artifacts").is_dir()
    assert "config.yaml" in {a.path for a in client.list_artifacts(children[3].info.run_id)}
    assert client.get_run(parent_id).data.metrics["pruned_jobs"] == 1
