"""Weights must fit: a file of another architecture is an error, not a silent random init."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file

from vitcli.core.errors import UserError

VIT = ["data.img_size=16", "model.patch_size=4"]


def _save(model, path):
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def vit_file(compose, tmp_path_factory):
    from vitcli.models.factory import create_model

    return _save(create_model(compose("train", VIT).model, 10), tmp_path_factory.mktemp("w") / "vit.safetensors")


def _build(compose, *overrides, classes=10):
    from vitcli.models.factory import create_model

    return create_model(compose("train", list(overrides)).model, classes)


def test_wrong_architecture_names_counts_and_keys(compose, vit_file):
    with pytest.raises(UserError, match=r"model.weights=.* matched 0 of \d+ tensors of resnet18 \(expected a "
                                        r"resnet18 state dict; got keys like .*blocks\.0\.attn"):
        _build(compose, "model=resnet18", "data.img_size=16", f"model.weights={vit_file}")


def test_partial_fit_is_an_error_unless_not_strict(compose, vit_file, caplog):
    deeper = [*VIT, "model.kwargs.depth=7", f"model.weights={vit_file}"]
    with pytest.raises(UserError, match=r"does not fit .* missing .*blocks\.6\..*model.weights_strict=false"):
        _build(compose, *deeper)
    with caplog.at_level(logging.WARNING, logger="vitcli"):
        model = _build(compose, *deeper, "model.weights_strict=false")
    assert "missing" in caplog.text and "weights_strict=false" in caplog.text
    from safetensors.torch import load_file

    saved = load_file(str(vit_file))
    assert torch.equal(model.blocks[5].mlp.fc1.weight, saved["blocks.5.mlp.fc1.weight"])


def test_shape_mismatch_outside_resizable_tensors_is_an_error(compose, tmp_path):
    from vitcli.models.factory import create_model

    narrow = create_model(compose("train", [*VIT, "++model.kwargs.embed_dim=96", "++model.kwargs.num_heads=3"]).model, 10)
    path = _save(narrow, tmp_path / "narrow.safetensors")
    with pytest.raises(UserError, match=r"other shape: .*\[96"):
        _build(compose, *VIT, f"model.weights={path}")


def test_resized_and_reinitialised_are_reported(compose, vit_file, caplog):
    with caplog.at_level(logging.INFO, logger="vitcli"):
        model = _build(compose, "data.img_size=32", "model.patch_size=4", f"model.weights={vit_file}", classes=7)
    assert "1 resized" in caplog.text and "2 re-initialised" in caplog.text and "pos_embed" in caplog.text
    assert model.head.out_features == 7


@pytest.mark.parametrize("content, message", [
    (b"", "is an empty file"),
    (b"\xff" * 64, "is not a readable state dict"),
    (b"not a tensor file at all" * 4, "is not a readable state dict"),
], ids=["empty", "garbage", "text"])
def test_unreadable_files_are_one_line(compose, tmp_path, content, message):
    for name in ("w.safetensors", "w.pth"):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(UserError, match=message) as info:
            _build(compose, *VIT, f"model.weights={path}")
        assert "\n" not in str(info.value)


def test_pickled_objects_are_refused(compose, tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"pos_embed": torch.zeros(1), "extra": logging.getLogger("x")}, path)
    with pytest.raises(UserError, match="pickled Python objects"):
        _build(compose, *VIT, f"model.weights={path}")


def test_teacher_weights_of_another_architecture_are_refused(compose, vit_file):
    from vitcli.loss.losses import create_criterion

    cfg = compose("train", ["data.img_size=16", "distill=soft", "distill.teacher=model:resnet18",
                            f"distill.teacher_weights={vit_file}"])
    with pytest.raises(UserError, match="distill.teacher_weights=.* matched 0 of"):
        create_criterion(cfg, device="cpu", num_classes=10, mean=[0.5] * 3, std=[0.5] * 3)


@pytest.mark.parametrize("overrides, nearest", [
    (["data.img_size=33", "model.patch_size=8"], "32 or 40"),
    (["data.img_size=30", "model.patch_size=4"], "28 or 32"),
    (["model=swin_t", "data.img_size=30"], "28 or 32"),
])
def test_input_size_must_be_a_multiple_of_the_patch(compose, overrides, nearest):
    with pytest.raises(UserError, match=rf"patch size .* use data.img_size={nearest}"):
        _build(compose, *overrides)


def test_dynamic_padding_models_accept_any_size(compose):
    model = _build(compose, "data.img_size=30", "model.patch_size=4", "+model.kwargs.dynamic_img_pad=true",
                   "+model.kwargs.dynamic_img_size=true")
    assert model(torch.randn(1, 3, 30, 30)).shape == (1, 10)
