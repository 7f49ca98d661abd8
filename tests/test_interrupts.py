"""SIGINT / SIGTERM stop a run cleanly and resumably; one writer per run dir; readers of a
run that is still training see consistent files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from test_resume import HARD


def _start(tiny_overrides, run_dir, *extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen([sys.executable, "-m", "vitcli", "train", *tiny_overrides, *HARD, *extra, f"hydra.run.dir={run_dir}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_mid_epoch(proc, run_dir, epoch: int = 1) -> dict:
    last = run_dir / "checkpoints/last.pt"
    while proc.poll() is None:
        if last.is_file():
            state = torch.load(last, weights_only=True)
            if state["epoch"] >= epoch and state["batch_in_epoch"] > 0:
                return state
        time.sleep(0.01)
    raise AssertionError(f"the run ended before epoch {epoch}: {proc.communicate()}")


@pytest.fixture(scope="module")
def reference(read_summary, train_tiny, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    train_tiny(run_dir, *HARD)
    return torch.load(run_dir / "checkpoints/last.pt", weights_only=True), read_summary(run_dir)


@pytest.mark.parametrize("sig, code", [pytest.param(signal.SIGINT, 130, id="SIGINT", marks=pytest.mark.slow),
                                       pytest.param(signal.SIGTERM, 143, id="SIGTERM")])
def test_signal_saves_marks_interrupted_and_rerun_resumes_bitwise(tiny_overrides, read_summary, train_tiny, tmp_path, reference, sig, code):
    run_dir = tmp_path / "run"
    proc = _start(tiny_overrides, run_dir)
    _wait_mid_epoch(proc, run_dir)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    line = stderr.strip().splitlines()[-1]
    assert f"interrupted by {sig.name}" in line and f"vitcli train resume={run_dir}" in line
    summary = read_summary(run_dir)
    assert summary["status"] == "interrupted"
    assert (run_dir / "plots" / "curves.png").is_file()
    saved = torch.load(run_dir / "checkpoints/last.pt", weights_only=True)
    assert saved["global_step"] == summary["global_step"] and saved["global_step"] < reference[0]["global_step"]

    proc = train_tiny(run_dir, *HARD)  # the same command again: resumes from the interrupt's last.pt
    assert "resumed from" in proc.stdout
    ref, res = reference[0], torch.load(run_dir / "checkpoints/last.pt", weights_only=True)
    for key in ("model", "model_ema"):
        mismatched = [k for k in ref[key] if not torch.equal(ref[key][k], res[key][k])]
        assert not mismatched, f"{key}: {mismatched[:5]}"
    assert read_summary(run_dir)["best"] == reference[1]["best"]
    assert read_summary(run_dir)["status"] == "completed"


def test_one_writer_per_run_dir_and_readers_see_consistent_files(tiny_overrides, cli, train_tiny, tmp_path):
    run_dir = tmp_path / "run"
    # checkpoints replaced every step while we read; best.pt there from the first epoch (a 200-epoch run
    # would otherwise evaluate, and write best.pt, every 5 epochs: a race with the reads on a slow machine)
    proc = _start(tiny_overrides, run_dir, "trainer.epochs=200", "trainer.eval_interval=1")
    try:
        _wait_mid_epoch(proc, run_dir)
        second = train_tiny(run_dir, check=False)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert second.stderr.strip().splitlines() == [
            f"vitcli: error: run dir {run_dir} is in use by another `vitcli train` (pid {proc.pid}); wait for it to "
            "finish or stop it, or train into another directory (hydra.run.dir=...)"]
        for which in ("last", "best"):
            out = cli("eval", f"run={run_dir}", f"checkpoint={which}", cwd=tmp_path)
            assert "top1" in out.stdout + out.stderr
        cli("predict", f"run={run_dir}", cwd=tmp_path)
        assert (run_dir / "predictions" / "val.npz").is_file()
        assert proc.poll() is None, "the run should still be training"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    assert proc.returncode == 143
    from vitcli.launch.runlock import run_lock

    with run_lock(run_dir):  # the lock went with the process
        pass


def test_lock_is_released_after_sigkill(tmp_path):
    code = ("import os, sys; from vitcli.launch.runlock import run_lock\n"
            f"with run_lock({str(tmp_path)!r}):\n    print('locked', flush=True); os.kill(os.getpid(), 9)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL and "locked" in proc.stdout
    from vitcli.launch.runlock import run_lock

    with run_lock(tmp_path):
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())


class _WorkerPids:
    """A dataset whose samples say which worker made them (and whether the inner init ran there)."""

    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> tuple[int, int]:
        time.sleep(0.02)
        return os.getpid(), int(os.environ.get("VITCLI_TEST_INNER_INIT", "-1"))


def _inner_init(worker_id: int) -> None:
    os.environ["VITCLI_TEST_INNER_INIT"] = str(worker_id)


def test_loader_workers_leave_stop_signals_to_the_main_process():
    """SLURM signals every process of a job step: a worker must outlive SIGTERM, SIGUSR2 and SIGINT
    from anyone but its main process, which then stops cleanly; the main process still ends it."""
    import multiprocessing

    from torch.utils.data import DataLoader

    from vitcli.data.files import WorkerInit

    loader = DataLoader(_WorkerPids(), batch_size=2, num_workers=2, worker_init_fn=WorkerInit(_inner_init),
                        persistent_workers=True)
    batches = iter(loader)
    pids, inner, taken = set(), set(), 0
    while len(pids) < 2:
        pid, init = next(batches)
        pids |= set(pid.tolist())
        inner |= set(init.tolist())
        taken += 1
    assert inner <= {0, 1} and inner, "the loader's own worker_init_fn runs too"
    for sig in ("TERM", "USR2", "INT"):  # sent by another process, as slurmstepd or a shell's kill -- -PGID
        subprocess.run(["kill", f"-{sig}", *map(str, pids)], check=True)
    time.sleep(0.5)
    rest = list(batches)  # a dead worker would fail this: "DataLoader worker (pid N) is killed by signal"
    assert taken + len(rest) == 32
    assert {p.pid for p in multiprocessing.active_children()} >= pids
    victim = min(pids)
    os.kill(victim, signal.SIGTERM)  # from the main process (torch's own shutdown): the worker ends
    deadline = time.time() + 10
    while victim in {p.pid for p in multiprocessing.active_children()} and time.time() < deadline:
        time.sleep(0.05)
    assert victim not in {p.pid for p in multiprocessing.active_children()}
    del batches, loader


EVAL_STOP = ["trainer.epochs=2", "trainer.ema=true", "regularization=heavy", "augmentation=mixup_cutmix",
             "data.eval_batch_size=4", "trainer.ckpt_interval_steps=1"]


def _signal_during_evaluation(monkeypatch, nth: int, at_batch: int, sig: int = signal.SIGTERM) -> list:
    """Make the `nth` evaluation of the run (1-based; two per epoch with EMA) send `sig` to this
    process as it starts its batch `at_batch`; returns the batches each evaluation went through."""
    import vitcli.engine.trainer as trainer_module

    real, seen = trainer_module.evaluate, []

    def evaluate(model, loader, runtime, **kwargs):
        seen.append(0)
        number = len(seen)

        class Signalling:
            def __len__(self):
                return len(loader)

            def __iter__(self):
                for i, batch in enumerate(loader):
                    if number == nth and i == at_batch:
                        os.kill(os.getpid(), sig)
                    seen[number - 1] = i + 1
                    yield batch

        return real(model, Signalling(), runtime, **kwargs)

    monkeypatch.setattr(trainer_module, "evaluate", evaluate)
    return seen


@pytest.fixture(scope="module")
def eval_stop_reference(make_trainer, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("eval_stop") / "reference"
    trainer = make_trainer(run_dir, *EVAL_STOP)
    trainer.fit()
    assert len(trainer.parts.val_loader) >= 4  # room to stop early
    return run_dir


@pytest.mark.parametrize("nth", [3, pytest.param(4, marks=pytest.mark.slow)], ids=["raw weights", "EMA weights"])
def test_a_stop_during_evaluation_ends_it_and_the_epoch_is_redone_exactly(make_trainer, read_summary, monkeypatch,
                                                                         tmp_path, eval_stop_reference, nth):
    from vitcli.launch.interrupts import TrainingInterrupted

    reference = eval_stop_reference
    run_dir = tmp_path / "run"
    seen = _signal_during_evaluation(monkeypatch, nth, at_batch=1)
    trainer = make_trainer(run_dir, *EVAL_STOP)
    with pytest.raises(TrainingInterrupted, match="while evaluating epoch 2"):
        trainer.fit()
    assert seen[nth - 1] == 2, seen  # it stopped at the batch after the signal, not at the end
    saved = torch.load(run_dir / "checkpoints/last.pt", weights_only=True)
    # the state after epoch 2's training, before its evaluation: a resumed run evaluates it again
    assert (saved["epoch"], saved["batch_in_epoch"]) == (1, trainer.batches_per_epoch)
    summary = read_summary(run_dir)
    assert summary["status"] == "interrupted" and summary["epochs_completed"] == 1
    monkeypatch.undo()

    make_trainer(run_dir, *EVAL_STOP).fit()
    ref, res = (torch.load(d / "checkpoints/last.pt", weights_only=True) for d in (reference, run_dir))
    for key in ("model", "model_ema"):
        mismatched = [k for k in ref[key] if not torch.equal(ref[key][k], res[key][k])]
        assert not mismatched, f"{key}: {mismatched[:5]}"
    assert read_summary(run_dir)["best"] == read_summary(reference)["best"]
    exact = ("epoch", "train_loss", "val_top1", "val_top5", "val_loss", "ema_top1", "ema_top5", "ema_loss", "lr")
    epochs = [[{k: r[k] for k in exact} for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())
               if r["kind"] == "epoch"] for d in (reference, run_dir)]
    assert epochs[0] == epochs[1] and len(epochs[0]) == 2


def test_a_process_leaving_for_a_requeue_ignores_further_stop_signals():
    """SLURM and srun repeat SIGTERM to a requeued job's processes: once a rank leaves, they are ignored."""
    from vitcli.launch import interrupts

    saved = {s: signal.getsignal(s) for s in interrupts.STOP_SIGNALS}
    try:
        with interrupts.stop_requests():
            interrupts.leave_quietly()
            os.kill(os.getpid(), signal.SIGTERM)  # ignored, not even a flag
            assert interrupts.requested() is None
        # the block gave its signals back ignored, not to their handlers (default: end the process)
        assert {signal.getsignal(s) for s in interrupts.STOP_SIGNALS} == {signal.SIG_IGN}
        for s, handler in saved.items():
            signal.signal(s, handler)
        with interrupts.stop_requests():  # a new run in this process: stops count again
            os.kill(os.getpid(), signal.SIGTERM)
            assert interrupts.requested() == signal.SIGTERM
        assert {s: signal.getsignal(s) for s in interrupts.STOP_SIGNALS} == saved  # and are given back
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
