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


def test_a_background_save_writes_the_state_of_its_moment(tmp_path):
    """The training thread goes on right after a save: what it changes next is not in the file, and
    best.pt is the same bytes as last.pt (a link, not a second serialization)."""
    from vitcli.engine.checkpoints import Checkpointer

    weights = torch.arange(4.0)
    ckpt = Checkpointer(tmp_path, background=True)
    ckpt.save_file({"model": {"w": weights}, "epoch": 1}, best=True)
    weights.add_(100)  # the next optimizer step
    ckpt.join()
    last, best = tmp_path / "checkpoints" / "last.pt", tmp_path / "checkpoints" / "best.pt"
    assert torch.equal(torch.load(last, weights_only=True)["model"]["w"], torch.arange(4.0))
    assert best.samefile(last)
    ckpt.save_file({"model": {"w": weights}, "epoch": 2}, best=False)
    ckpt.join()
    assert torch.load(best, weights_only=True)["epoch"] == 1 and torch.load(last, weights_only=True)["epoch"] == 2


def test_a_failed_background_write_is_raised_at_the_next_join(tmp_path):
    import pytest

    from vitcli.engine.checkpoints import Checkpointer

    ckpt = Checkpointer(tmp_path, background=True)
    ckpt.save_file({"model": {}, "epoch": 1}, best=False)
    ckpt.save_file({"model": {}, "bad": lambda: None}, best=False)  # cannot be pickled: fails on the writer
    with pytest.raises(Exception):
        ckpt.join()
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1  # the last good one
