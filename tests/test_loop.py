"""The train step reads nothing back from the device between log points, a non-finite loss
still stops the run (naming the step range), and eval runs at the precision the run trained at."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

VITCLI = str(Path(__file__).resolve().parents[1] / "vitcli")
HOST_READS = ("item", "tolist", "cpu", "numpy", "__float__", "__bool__", "__int__")


class HostReads:
    """Counts the calls vitcli's own code makes that copy a tensor's value to the host."""

    def __init__(self, monkeypatch):
        self.count = 0
        for name in HOST_READS:
            monkeypatch.setattr(torch.Tensor, name, self._counting(getattr(torch.Tensor, name)))

    def _counting(self, real):
        def read(tensor, *args, **kwargs):
            if sys._getframe(1).f_code.co_filename.startswith(VITCLI):
                self.count += 1
            return real(tensor, *args, **kwargs)

        return read


@pytest.mark.parametrize("log_interval", [1, 4])
def test_steps_between_log_points_read_nothing_back(tiny_in_process, compose, tmp_path, monkeypatch, log_interval):
    from vitcli.engine.trainer import Trainer

    # 640 train samples / batch 32 = 20 optimizer steps in the epoch
    cfg = compose("train", [*tiny_in_process, "data.num_samples=800", f"trainer.log_interval={log_interval}"])
    trainer = Trainer(cfg, tmp_path)
    trainer.prepare_epoch(0)
    reads = HostReads(monkeypatch)
    stats = trainer.train_one_epoch(0)
    monkeypatch.undo()
    steps = trainer.state.global_step
    assert steps == 20 and stats["train_loss"] > 0
    # one read per log point, plus the epoch-end read
    assert reads.count <= steps // log_interval + 2, reads.count


def test_non_finite_loss_names_the_steps_and_never_reaches_a_checkpoint(tiny_in_process, compose, read_summary, tmp_path):
    from vitcli.engine.loss_window import NonFiniteLoss
    from vitcli.engine.trainer import Trainer

    cfg = compose("train", [*tiny_in_process, "data.num_samples=800", "trainer.log_interval=5",
                            "trainer.ckpt_interval_steps=3"])
    trainer = Trainer(cfg, tmp_path)
    base, calls = trainer.parts.criterion, []

    def nan_from_step_7(x, out, y):
        calls.append(1)
        loss = base(x, out, y)
        return loss * float("nan") if len(calls) >= 7 else loss

    trainer.parts.criterion = nan_from_step_7
    with pytest.raises(NonFiniteLoss, match=r"loss became nan between optimizer steps 7 and 9 \(epoch 1\)"):
        trainer.fit()
    kept = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    assert kept["global_step"] == 6  # the step-9 checkpoint was refused: the window had a NaN
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())
    assert read_summary(tmp_path)["status"] == "failed"


@pytest.mark.parametrize("precision", ["bf16", "32"])
def test_eval_of_a_run_equals_its_summary_at_the_run_precision(tiny_in_process, compose, read_summary, tmp_path, precision):
    from vitcli.engine.inference import run_split
    from vitcli.engine.trainer import Trainer

    run = tmp_path / "run"
    cfg = compose("train", [*tiny_in_process, "trainer.epochs=1", f"trainer.precision={precision}"])
    Trainer(cfg, run).fit()
    best = read_summary(run)["best"]
    result = run_split(run, "val", "best", device="cpu")[0]
    assert result["precision"] == precision
    assert (result["top1"], result["top5"], result["loss"]) == (best["val_top1"], best["val_top5"], best["val_loss"])
    if precision == "bf16":  # the same weights scored in fp32 give another loss: the precision really applied
        fp32 = run_split(run, "val", "best", device="cpu", precision="32")[0]
        assert fp32["precision"] == "32" and fp32["loss"] != best["val_loss"]
