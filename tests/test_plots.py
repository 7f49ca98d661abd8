"""Run plots: curves (best epoch, EMA, title), confusion matrix, written atomically."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vitcli.viz.plots import best_epoch, plot_confusion, plot_curves


@pytest.fixture
def curves_run(fake_run):
    """`curves_run(root, ema)`: a fake 3-epoch run (metrics.jsonl, summary.json) at root/runs/myexp/<stamp>."""

    def make(root, ema: bool):
        rows = []
        for e, (top1, ema1) in enumerate([(50, 40), (60, 70), (65, 66)], start=1):
            rows.append({"kind": "step", "epoch": e, "global_step": 10 * e - 5, "train_loss": 1.0, "lr": 0.1 / e})
            rec = {"kind": "epoch", "epoch": e, "train_loss": 1 / e, "val_loss": 1 / e, "val_top1": top1,
                   "val_top5": 90, "lr": 0.1 / e}
            if ema:
                rec.update(ema_top1=ema1, ema_loss=1 / e)
            rows.append(rec)
        return fake_run(root / "runs" / "myexp" / "2026-01-01_00-00-00", config="name: myexp\n", metrics=rows,
                        summary={"global_step": 30, "epochs_completed": 3})

    return make


def test_best_epoch_counts_the_ema_weights(curves_run, tmp_path):
    run = curves_run(tmp_path, ema=True)
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in epochs if r["kind"] == "epoch"]
    assert best_epoch(epochs)["epoch"] == 2  # EMA 70 beats the raw 65 of epoch 3
    assert best_epoch([{**r, "ema_top1": None} for r in epochs])["epoch"] == 3


def test_curves_title_lines_and_atomic_write(curves_run, tmp_path, monkeypatch):
    import matplotlib.figure

    seen = {}
    real_savefig = matplotlib.figure.Figure.savefig

    def spy(fig, path, *args, **kwargs):
        seen["title"] = fig._suptitle.get_text()
        seen["labels"] = [line.get_label() for ax in fig.axes for line in ax.get_lines()]
        seen["path"] = str(path)
        return real_savefig(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    run = curves_run(tmp_path, ema=True)
    out = plot_curves(run)
    assert out == run / "plots" / "curves.png" and out.read_bytes()[:4] == b"\x89PNG"
    assert seen["title"] == "myexp/2026-01-01_00-00-00"
    assert "val top-1 (EMA)" in seen["labels"] and "best 70.00 (epoch 2)" in seen["labels"]
    assert "step" in seen["labels"]  # per-step learning rate from summary.json's steps per epoch
    assert seen["path"] != str(out) and list((run / "plots").iterdir()) == [out]  # temp file, renamed
    plot_curves(curves_run(tmp_path / "b", ema=False))
    assert not any("EMA" in label for label in seen["labels"])


def test_confusion_shows_counts_up_to_20_classes(tmp_path, monkeypatch):
    import matplotlib.figure

    texts = {}
    real_savefig = matplotlib.figure.Figure.savefig

    def spy(fig, path, *args, **kwargs):
        texts[len(fig.axes[0].get_xticks())] = [t.get_text() for t in fig.axes[0].texts]
        return real_savefig(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    cm = np.diag([9] * 5)
    cm[0, 1] = 1
    plot_confusion(tmp_path / "c5.png", cm, [f"c{i}" for i in range(5)], "t")
    assert sorted(texts[5]) == sorted(["9"] * 5 + ["1"])  # the single error is written (zeros are not)
    plot_confusion(tmp_path / "c30.png", np.eye(30, dtype=int), [f"c{i}" for i in range(30)], "t")
    assert texts[30] == []
