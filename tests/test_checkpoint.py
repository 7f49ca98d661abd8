"""Checkpoint writes are atomic; hostile checkpoints are refused, not executed."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from vitcli.core.checkpoint import load_checkpoint, save_checkpoint
from vitcli.core.errors import UserError
from vitcli.core.io import atomic_write


def test_roundtrip(tmp_path):
    state = {"model": {"w": torch.arange(3.0)}, "epoch": 2}
    save_checkpoint(state, tmp_path / "c.pt")
    back = load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(back["model"]["w"], state["model"]["w"]) and back["epoch"] == 2


def test_failed_write_keeps_previous_file(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint({"model": {"w": torch.zeros(2)}}, path)

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("killed mid-save")

    with pytest.raises(RuntimeError):
        atomic_write(path, boom)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.zeros(2))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left behind


class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickled_object_is_refused_not_executed(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": Evil()}, path)
    with pytest.raises(UserError, match="refusing to load"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists() and not os.path.exists("pwned")


def test_garbage_file_is_a_user_error(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError):
        load_checkpoint(path)
    plain = tmp_path / "plain.pt"
    with open(plain, "wb") as f:
        pickle.dump([1, 2], f)
    with pytest.raises(UserError):
        load_checkpoint(plain)
