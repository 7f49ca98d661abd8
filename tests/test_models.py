"""Every model preset builds through timm and runs a forward pass on small inputs; gradient checkpointing."""

from __future__ import annotations

import pytest
import torch

from vitcli.core.errors import UserError
from vitcli.core.options import group_options
from vitcli.models.factory import count_params, create_model

SMALL = {"vit_b": 32, "mixer_b": 32, "dinov2_b": 28, "clip_b16": 32, "swin_s": 32, "dinov2_s": 28}


@pytest.mark.parametrize("preset", group_options("model"))
def test_preset_builds_and_runs_forward(compose, preset):
    size = SMALL.get(preset, 32)
    overrides = [f"model={preset}", f"data.img_size={size}"]
    cfg = compose("train", overrides)
    if cfg.model.img_size is not None and cfg.model.patch_size is None and not preset.startswith(("swin", "hybrid")):
        cfg.model.patch_size = 14 if "dinov2" in preset else 8  # a few tokens at 32 px
    torch.manual_seed(0)
    model = create_model(cfg.model, num_classes=7, reg_cfg=cfg.regularization).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    assert count_params(model) > 0


def test_small_input_patch_override_changes_token_count(compose):
    cfg = compose("train", ["model=vit_t", "data.img_size=32", "model.patch_size=4"])
    model = create_model(cfg.model, num_classes=10)
    assert model.patch_embed.grid_size == (8, 8)


def test_mixer_accepts_patch_override(compose):
    cfg = compose("train", ["model=mixer_s", "data.img_size=32", "model.patch_size=4"])
    model = create_model(cfg.model, num_classes=10)
    assert model.stem.grid_size == (8, 8)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_regularization_rates_reach_the_model(compose):
    cfg = compose("train", ["model=vit_pico", "regularization=heavy"])
    model = create_model(cfg.model, num_classes=10, reg_cfg=cfg.regularization)
    drop_paths = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    assert drop_paths and max(drop_paths) == pytest.approx(0.1)
    assert model.head_drop.p == pytest.approx(0.1)


def test_unknown_timm_name_is_a_user_error(compose):
    from vitcli.core.errors import UserError

    cfg = compose("train", ["model.timm_name=not_a_model"])
    with pytest.raises(UserError, match="not a timm model"):
        create_model(cfg.model, num_classes=10)


def test_grad_checkpointing_gives_the_same_loss_and_grads():
    import copy

    import timm

    from vitcli.models.factory import enable_grad_checkpointing

    torch.manual_seed(0)
    plain = timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=4, depth=2, embed_dim=32,
                              num_heads=2, num_classes=3)
    ckpt = copy.deepcopy(plain)
    enable_grad_checkpointing(ckpt, "tiny")
    assert ckpt.grad_checkpointing and not plain.grad_checkpointing
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    losses = []
    for model in (plain, ckpt):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        losses.append(loss.detach())
    assert torch.equal(losses[0], losses[1])
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=0, atol=1e-7), name


def test_grad_checkpointing_unsupported_is_one_clear_error():
    import timm

    from vitcli.models.factory import enable_grad_checkpointing

    with pytest.raises(UserError, match="does not support gradient checkpointing"):
        enable_grad_checkpointing(torch.nn.Linear(2, 2), "linear")
    model = timm.create_model("inception_v3", num_classes=2)  # timm: asserts not supported
    with pytest.raises(UserError, match="model=inc"):
        enable_grad_checkpointing(model, "inc")


def test_trainer_turns_grad_checkpointing_on(make_trainer, tmp_path):
    trainer = make_trainer(tmp_path, "trainer.grad_checkpointing=true")
    assert trainer.parts.model.grad_checkpointing
    with pytest.raises(UserError, match=r"trainer.grad_checkpointing=true: model=resnet18 \(InceptionV3\)"):
        make_trainer(tmp_path, "trainer.grad_checkpointing=true", "model=resnet18", "model.timm_name=inception_v3",
                     "model.patch_size=null")


def test_models_table_lists_every_preset_with_its_kind():
    """`vitcli models`, bare, as the README shows it: every preset, CNNs told from ViT-like ones."""
    from vitcli.models.catalog import preset_rows

    rows = {r["preset"]: r for r in preset_rows()}
    assert sorted(rows) == group_options("model")
    assert {rows[p]["kind"] for p in ("resnet18", "convnext_t", "effnetv2_s")} == {"CNN"}
    assert {rows[p]["kind"] for p in ("vit_pico", "swin_t", "mixer_s", "hybrid_r26_s32", "deit_t_distilled")} == {"ViT-like"}
    assert rows["vit_b"]["params_m"] > rows["vit_s"]["params_m"] > rows["vit_t"]["params_m"] > 1
