"""logger=tensorboard: event files written with torch.utils.tensorboard, read back with
tensorboard's EventAccumulator (scalars per step and epoch, the config as text, the plots as
images; eval and explain add theirs), and how logger=... selects any mix of trackers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("tensorboard")

import services  # noqa: E402


@pytest.fixture(scope="module")
def tb_run(train_tiny, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("tb") / "run"
    train_tiny(run_dir, "logger=tensorboard", "trainer.threads=1")
    return run_dir


def records(run_dir: Path, kind: str) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == kind]


def scalars(events, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_scalars_text_and_images_of_a_run(tb_run, read_summary):
    events = services.tensorboard_events(tb_run / "tensorboard")
    steps, epochs = records(tb_run, "step"), records(tb_run, "epoch")
    assert services.same_series(scalars(events, "train/loss"), [(r["global_step"], r["train_loss"]) for r in steps])
    assert services.same_series(scalars(events, "train/lr"), [(r["global_step"], r["lr"]) for r in steps])
    assert len({r["train_loss"] for r in steps}) > 1
    for tag, key in (("val/top1", "val_top1"), ("val/loss", "val_loss"), ("epoch/train_loss", "train_loss")):
        assert services.same_series(scalars(events, tag), [(r["epoch"], r[key]) for r in epochs])
    assert scalars(events, "best/val_top1") == [(2, pytest.approx(read_summary(tb_run)["best"]["val_top1"]))]
    config = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "name: vit_pico" in config and "tensorboard: true" in config
    image = events.Images("plots/curves")[-1]
    assert image.step == 2 and image.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n" and image.width > 100


def test_eval_and_explain_add_to_the_run_they_read(tb_run, cli, tmp_path):
    import shutil

    run_dir = Path(shutil.copytree(tb_run, tmp_path / "run"))
    cli("eval", f"run={run_dir}")
    cli("explain", f"run={run_dir}", "n=2")
    result = json.loads((run_dir / "eval" / "val_best.json").read_text())
    events = services.tensorboard_events(run_dir / "tensorboard")
    assert scalars(events, "eval/val_best/top1") == [(2, pytest.approx(result["top1"]))]
    assert scalars(events, "eval/val_best/macro_f1") == [(2, pytest.approx(result["macro_f1"]))]
    images = set(events.Tags()["images"])
    assert {"plots/confusion_val_best", "plots/errors_val_best", "plots/explain_val_rollout"} <= images


@pytest.mark.parametrize("overrides, on", [
    ([], []),
    (["logger=csv"], []),
    (["logger=wandb"], ["wandb"]),
    (["logger=[wandb,mlflow]"], ["wandb", "mlflow"]),
    (["logger=[mlflow,tensorboard]"], ["mlflow", "tensorboard"]),
    (["logger=mlflow", "logger.backends.tensorboard=true"], ["mlflow", "tensorboard"]),
])
def test_logger_selects_any_mix_of_trackers(compose, overrides, on):
    from vitcli.engine.tracking import active_backends, create_trackers

    cfg = compose("train", overrides)
    assert active_backends(cfg) == on
    assert [t.name for t in create_trackers(Path("unused"), cfg)] == on


def test_a_config_saved_before_logger_lists_keeps_its_tracker(tmp_path):
    """Runs trained before `logger.backends` existed say only logger.name: wandb."""
    import yaml

    from vitcli.core.runs import load_run_config
    from vitcli.engine.tracking import active_backends

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"name": "old", "logger": {"name": "wandb", "project": "p"}}))
    assert active_backends(load_run_config(tmp_path)) == ["wandb"]


def test_a_resume_drops_what_the_killed_process_logged_after_its_checkpoint(tmp_path):
    """Killed at step 6 with last.pt at step 4: the resumed run's steps 5, 6 replace the old ones."""
    from omegaconf import OmegaConf

    from vitcli.engine.tracking.tensorboard_tracker import TensorBoardTracker

    cfg = OmegaConf.create({"name": "x", "logger": {"tensorboard": {"images": True}}})
    first = TensorBoardTracker(tmp_path, cfg)
    for step in range(1, 7):
        first.log_step({"kind": "step", "epoch": 1 + (step > 4), "global_step": step, "train_loss": 10.0 + step})
    first.log_epoch({"epoch": 1, "val_loss": 3.0})
    first.w.close()  # the process dies here; nothing else is written
    resumed = TensorBoardTracker(tmp_path, cfg)
    resumed.resume_at(epoch=1, step=4)
    for step in range(5, 9):
        resumed.log_step({"kind": "step", "epoch": 2, "global_step": step, "train_loss": 20.0 + step})
    resumed.log_epoch({"epoch": 2, "val_loss": 2.0})
    resumed.finish({"status": "completed", "epochs_completed": 2, "best": {}})
    events = services.tensorboard_events(tmp_path / "tensorboard")
    assert scalars(events, "train/loss") == [(1, 11.0), (2, 12.0), (3, 13.0), (4, 14.0), (5, 25.0), (6, 26.0),
                                              (7, 27.0), (8, 28.0)]
    assert scalars(events, "val/loss") == [(1, 3.0), (2, 2.0)]
    assert not first.failed and not resumed.failed


def test_predict_probe_and_ensemble_add_to_the_runs_they_read(tb_run, cli, tmp_path):
    import shutil

    a = Path(shutil.copytree(tb_run, tmp_path / "a"))
    b = Path(shutil.copytree(tb_run, tmp_path / "b"))
    cli("predict", f"run={a}", "split=val")
    cli("probe", f"run={a}", "method=knn")
    cli("ensemble", f"runs=[{a},{b}]", "split=val", "weights_from=val", "predict_missing=true",
        f"out={tmp_path / 'ens'}")
    ens = json.loads((tmp_path / "ens" / "ensemble.json").read_text())["ensemble_scores"]["val"]
    probe = json.loads((a / "probe" / "knn.json").read_text())
    events = services.tensorboard_events(a / "tensorboard")
    # predict on val: the same model and split as the run's own best -> its val top-1
    assert scalars(events, "predict/val/top1") == [(2, pytest.approx(read(a)["best"]["val_top1"], abs=1e-4))]
    assert scalars(events, "probe/knn/top1") == [(2, pytest.approx(probe["top1"]))]
    for member in (a, b):  # each member of the ensemble gets its scores
        member_events = services.tensorboard_events(member / "tensorboard")
        assert scalars(member_events, "ensemble/val/top1") == [(2, pytest.approx(ens["top1"]))]


def read(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())
