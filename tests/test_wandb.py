"""logger=wandb: an offline run file that holds the logged metrics, and a sink that never
stops training when wandb fails."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest

wandb = pytest.importorskip("wandb")

# The .wandb run file is a LevelDB-style log (wandb 0.31 ships no Python reader): a 7-byte
# file header (":W&B", ident, version), then 32 KiB blocks of records, each with a 7-byte
# header: crc32 of type+data (4, little endian), length (2), type (1: full, 2: first,
# 3: middle, 4: last piece of a record spanning blocks). A block tail under 7 bytes is padding.
BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_wandb_records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pending, records = HEADER, b"", []
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        crc, length, rtype = struct.unpack("<IHB", data[pos:pos + HEADER]) if left >= HEADER else (0, 0, 0)
        if rtype == 0:  # padding up to the next block
            pos += left
            continue
        chunk = data[pos + HEADER:pos + HEADER + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([rtype]))) == crc, f"bad checksum at byte {pos}"
        pos += HEADER + length
        if rtype in (FIRST, MIDDLE):
            pending = (pending if rtype == MIDDLE else b"") + chunk
            continue
        payload, pending = (pending + chunk if rtype == LAST else chunk), b""
        record = pb.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


def finished_records(path: Path, timeout: float = 60.0) -> list:
    """The run file's records once it holds the run's exit record: wandb's service process may still
    be writing the file when wandb.finish() has returned in this process (the CLI's own process
    flushes at exit; in-process tests read right away)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            records = read_wandb_records(path)
        except AssertionError:  # a record half written: read again
            if time.monotonic() > deadline:
                raise
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def items(record) -> dict:
    kind = record.WhichOneof("record_type")
    entries = record.history.item if kind == "history" else record.summary.update
    return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in entries}


def test_offline_run_file_holds_the_logged_metrics(read_summary, train_tiny, tmp_path):
    run_dir = tmp_path / "run"
    notes = "n" * 40000  # a run record longer than a 32 KiB block: stored as FIRST/MIDDLE/LAST pieces
    train_tiny(run_dir, "logger=wandb", "logger.tags=[tiny,test]", "logger.group=g1", f"logger.notes={notes}",
              "trainer.log_interval=1", "trainer.threads=1", env={"WANDB_MODE": "offline"})
    files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    records = finished_records(files[0])
    by_kind: dict = {}
    for r in records:
        by_kind.setdefault(r.WhichOneof("record_type"), []).append(r)

    run = by_kind["run"][0].run
    assert run.project == "vitcli" and run.run_group == "g1" and list(run.tags) == ["tiny", "test"]
    assert run.display_name == f"default/{run_dir.name}" and run.notes == notes
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert config["run_dir"] == str(run_dir.resolve()) and config["model"]["name"] == "vit_pico"

    jsonl = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    history = [items(r) for r in by_kind["history"]]
    steps = [h for h in history if "train/loss" in h]
    epochs = [h for h in history if "val/top1" in h]
    assert [h["global_step"] for h in steps] == [r["global_step"] for r in jsonl if r["kind"] == "step"]
    assert [h["train/loss"] for h in steps] == pytest.approx([r["train_loss"] for r in jsonl if r["kind"] == "step"])
    assert all("train/lr" in h and "train/images_per_s" in h for h in steps)
    epoch_records = [r for r in jsonl if r["kind"] == "epoch"]
    assert [h["epoch"] for h in epochs] == [1, 2]
    assert [h["val/top1"] for h in epochs] == pytest.approx([r["val_top1"] for r in epoch_records])
    assert [h["val/loss"] for h in epochs] == pytest.approx([r["val_loss"] for r in epoch_records])

    summary = {}
    for r in by_kind["summary"]:
        summary.update(items(r))
    best = read_summary(run_dir)["best"]
    assert summary["best/val_top1"] == pytest.approx(best["val_top1"])
    assert summary["status"] == "completed" and summary["run_dir"] == str(run_dir.resolve())
    assert by_kind["exit"][0].exit.exit_code == 0
    # csv/jsonl logging is on whatever the logger
    assert (run_dir / "metrics.csv").is_file() and (run_dir / "plots" / "curves.png").is_file()


def _cfg(**logger):
    """Enough of a train config for the W&B sink, without composing one."""
    from omegaconf import OmegaConf

    base = dict(name="wandb", project="vitcli", entity=None, group=None, tags=[], run_name=None, notes=None,
                mode="offline", init_timeout=5.0)
    return OmegaConf.create({"name": "default", "logger": {**base, **logger}})


def test_wandb_init_failure_never_stops_training(tmp_path, monkeypatch, caplog):
    from vitcli.engine.tracking import MetricsLogger

    def boom(**kwargs):
        raise RuntimeError("no wandb today")

    monkeypatch.setattr(wandb, "init", boom)
    logger = MetricsLogger(tmp_path, _cfg())
    logger.log({"kind": "step", "epoch": 1, "global_step": 1, "train_loss": 1.0, "lr": 0.1, "images_per_s": 5.0})
    logger.log_epoch({"epoch": 1, "train_loss": 1.0, "val_top1": 50.0, "val_top5": 90.0, "val_loss": 1.2, "lr": 0.1})
    logger.finish({"status": "completed", "best": {"val_top1": 50.0}, "global_step": 1, "epochs_completed": 1})
    assert logger.wandb.failed
    assert sum("wandb logging is off" in m for m in caplog.messages) == 1  # one warning, not one per record
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2  # the files are unaffected


def test_wandb_log_failure_mid_run_turns_the_sink_off(tmp_path, monkeypatch):
    from vitcli.engine.tracking import MetricsLogger

    class FlakyRun:
        summary: dict = {}
        id = "flaky1"  # opens fine (its id is saved); the first log fails

        def define_metric(self, *args, **kwargs):
            pass

        def log(self, data):
            raise OSError("disk full")

        def finish(self, exit_code=0):
            raise AssertionError("a disabled sink must not be finished")

    monkeypatch.setattr(wandb, "init", lambda **kwargs: FlakyRun())
    logger = MetricsLogger(tmp_path, _cfg())
    for step in range(3):
        logger.log({"kind": "step", "epoch": 1, "global_step": step + 1, "train_loss": 1.0, "lr": 0.1})
    logger.finish({"status": "completed", "best": {}})
    assert logger.wandb.failed and len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
    assert (tmp_path / "wandb" / "run_id").read_text() == "flaky1"  # it did open: the failure was mid-run


def test_auto_mode_is_offline_without_credentials(tmp_path, monkeypatch):
    from vitcli.engine.tracking import wandb_mode

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("NETRC", raising=False)
    assert wandb_mode("auto") == "offline"
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode("auto") == "disabled"
    assert wandb_mode("offline") == "offline"


def test_csv_logger_never_imports_wandb(tmp_path):
    from omegaconf import OmegaConf

    from vitcli.engine.tracking import MetricsLogger

    logger = MetricsLogger(tmp_path, OmegaConf.create({"name": "x", "logger": {"name": "csv"}}))
    assert logger.wandb is None


def test_plots_artifact_and_one_run_id_across_a_resume(cli, read_summary, train_tiny, tmp_path):
    """Images of the plots and model.safetensors as a model artifact (best, latest) are in the
    offline file; continuing the run (resume=DIR, more epochs) continues the same W&B run id."""
    run_dir = tmp_path / "run"
    env = {"WANDB_MODE": "offline"}
    train_tiny(run_dir, "logger=wandb", "trainer.epochs=1", "trainer.threads=1", env=env)
    first_id = (run_dir / "wandb" / "run_id").read_text()
    cli("train", f"resume={run_dir}", "trainer.epochs=2", "trainer.threads=1", env=env)
    assert read_summary(run_dir)["epochs_completed"] == 2
    files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2 and all(f.name == f"run-{first_id}.wandb" for f in files)
    records = [r for f in files for r in finished_records(f)]
    assert {r.run.run_id for r in records if r.WhichOneof("record_type") == "run"} == {first_id}
    history = [items(r) for r in records if r.WhichOneof("record_type") == "history"]
    images = [h for h in history if "plots/curves/_type" in h]  # wandb flattens the Image into nested keys
    assert len(images) == 2 and images[-1]["plots/curves/_type"] == "image-file"
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    assert artifacts and artifacts[-1].type == "model" and set(artifacts[-1].aliases) >= {"best", "latest"}
    assert any(e.path == "model.safetensors" for e in artifacts[-1].manifest.contents)


def test_eval_and_explain_log_a_job_type_eval_run(cli, tiny_run_copy, tmp_path):
    from omegaconf import OmegaConf

    run_dir = tiny_run_copy
    cfg = OmegaConf.load(run_dir / "config.yaml")
    cfg.logger.name = "wandb"
    OmegaConf.save(cfg, run_dir / "config.yaml")
    env = {"WANDB_MODE": "offline"}
    cli("eval", f"run={run_dir}", env=env)
    cli("explain", f"run={run_dir}", "n=2", env=env)
    files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2
    runs, keys = [], set()
    for f in files:
        for r in finished_records(f):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                runs.append(r.run)
            elif kind == "history":
                keys |= set(items(r))
    assert [r.job_type for r in runs] == ["eval", "eval"] and {r.project for r in runs} == {"vitcli"}
    assert "eval/top1" in keys and "eval/balanced_accuracy" in keys
    assert {"plots/errors_val_best/_type", "plots/confusion_val_best/_type", "plots/explain_val_rollout/_type"} <= keys
