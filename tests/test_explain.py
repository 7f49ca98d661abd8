"""`vitcli explain`: attention rollout by hand, maps for every preset family, the command end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from vitcli.core.errors import UserError
from vitcli.tasks.saliency import attention_probs, explain_maps, resolve_method, rollout

MODEL_DIR = Path(__file__).resolve().parents[1] / "conf" / "model"


def tiny_vit(**kw):
    import timm

    torch.manual_seed(0)
    args = dict(img_size=8, patch_size=4, embed_dim=8, depth=2, num_heads=2, num_classes=3)
    return timm.create_model("vit_tiny_patch16_224", **{**args, **kw}).eval()


def test_rollout_equals_a_hand_computation():
    model = tiny_vit()
    x = torch.randn(2, 3, 8, 8)
    fused = [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")]
    # by hand: each block's softmax(q k^T / sqrt(d)) from its own weights, then
    # Abnar & Zuidema's recursion with heads averaged and the residual as 0.5 I
    with torch.no_grad():
        h = model.norm_pre(model._pos_embed(model.patch_embed(x)))
        layers = []
        for blk in model.blocks:
            qkv = blk.attn.qkv(blk.norm1(h)).reshape(2, 5, 3, 2, 4).permute(2, 0, 3, 1, 4)
            q, k = qkv[0], qkv[1]
            layers.append(((q @ k.transpose(-2, -1)) / 2.0).softmax(-1).numpy())
            h = blk(h)
    expected = np.eye(5)[None].repeat(2, 0)
    for a in layers:
        a = 0.5 * a.mean(axis=1) + 0.5 * np.eye(5)
        a = a / a.sum(axis=-1, keepdims=True)
        expected = np.einsum("bij,bjk->bik", a, expected)
    attns = attention_probs(model, x)
    assert len(attns) == 2 and attns[0].shape == (2, 2, 5, 5)
    np.testing.assert_allclose(attns[1].numpy(), layers[1], atol=1e-5)
    np.testing.assert_allclose(rollout(attns).numpy(), expected, atol=1e-5)
    # fused attention is restored and the extraction hooks are gone
    assert [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")] == fused
    assert not any(m._forward_hooks for m in model.modules())


# tiny timm arguments per architecture family (keyed by the start of the timm name)
TINY_KWARGS = {
    "vit_small_r26": dict(embed_dim=32, depth=2, num_heads=2),
    "vit": dict(embed_dim=32, depth=2, num_heads=2),
    "deit": dict(embed_dim=32, depth=2, num_heads=2),
    "swin": dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=4),
    "mixer": dict(num_blocks=2, embed_dim=32),
    "resnet": dict(),
    "convnext": dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32)),
    "efficientnet": dict(channel_multiplier=0.25, depth_multiplier=0.25),
    "regnet": dict(),
}
# stride-32 models (CNNs, Swin, the hybrid) need 64 px for a 2x2 last feature map
SIZES = {"vit_small_r26": 96, "dinov2": 28, "vit": 32, "deit": 32, "mixer": 32}  # first match wins


def preset_model(compose, preset: str, head: str = "linear"):
    from vitcli.models.factory import classifier_names, create_model

    cfg = compose("train", [f"model={preset}"])
    name = cfg.model.timm_name
    kwargs = next(v for k, v in TINY_KWARGS.items() if name.startswith(k))
    size = next((v for k, v in SIZES.items() if name.startswith(k) or k in name), 64)
    OmegaConf.update(cfg, "data.img_size", size)
    cfg.model.kwargs = kwargs
    if cfg.model.img_size is not None:
        cfg.model.patch_size = 7 if "dinov2" in name else (None if "r26" in name or "swin" in name else 8)
    cfg.model.head = head
    torch.manual_seed(0)
    model = create_model(cfg.model, 4, cfg.regularization).eval()
    with torch.no_grad():  # timm zero-initialises some heads (Mixer): give the classes a gradient
        for name in classifier_names(model):  # DeiT distilled: head and head_dist
            for p in model.get_submodule(name).parameters():
                p.normal_(0, 0.5)
    return model, size


@pytest.mark.parametrize("preset", sorted(p.stem for p in MODEL_DIR.glob("*.yaml")))
def test_every_preset_family_yields_a_map_of_the_image_size(compose, preset):
    model, size = preset_model(compose, preset)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        top1 = model(x).argmax(dim=1).tolist()  # Grad-CAM of the predicted class, as explain does
    methods = ["rollout", "attention", "gradcam"] if resolve_method(model, "auto") == "rollout" else ["gradcam"]
    for method in methods:
        maps = explain_maps(model, x, method, classes=top1)
        assert maps.shape == (2, size, size), (preset, method)
        assert np.isfinite(maps).all() and maps.max() > maps.min(), (preset, method)


def test_mlp_head_is_explained_and_rollout_on_a_cnn_is_refused(compose):
    model, size = preset_model(compose, "vit_pico", head="mlp")
    assert isinstance(model.get_classifier(), torch.nn.Sequential)
    x = torch.randn(1, 3, size, size)
    for method in ("rollout", "gradcam"):
        assert explain_maps(model, x, method, classes=[2]).shape == (1, size, size)
    cnn, _ = preset_model(compose, "resnet18")
    assert resolve_method(cnn, "auto") == "gradcam"
    with pytest.raises(UserError, match="method=rollout needs a ViT-family model"):
        resolve_method(cnn, "rollout", "model=resnet18")


def explain(compose, *overrides: str):
    from vitcli.commands.explain import run_explain

    return run_explain(compose("explain", list(overrides)))


@pytest.fixture()
def mlp_ema_run(tiny_run_copy):
    """A copy of the shared tiny run turned into a head=mlp run whose checkpoints carry EMA weights."""
    from vitcli.models.factory import create_model

    run = tiny_run_copy
    cfg = OmegaConf.load(run / "config.yaml")
    cfg.model.head = "mlp"
    OmegaConf.save(cfg, run / "config.yaml")
    for name in ("best", "last"):
        state = torch.load(run / "checkpoints" / f"{name}.pt", weights_only=True)
        model = create_model(cfg.model, int(state["num_classes"]), cfg.regularization)
        state["model"] = model.state_dict()
        state["model_ema"] = {k: v * 0.9 if v.is_floating_point() else v for k, v in state["model"].items()}
        torch.save(state, run / "checkpoints" / f"{name}.pt")
    return run


def test_explain_a_split_and_user_images_with_an_mlp_head_and_ema(compose, mlp_ema_run, tmp_path):
    from PIL import Image

    out = explain(compose, f"run={mlp_ema_run}", "n=6", "checkpoint=ema")
    assert out == mlp_ema_run / "plots" / "explain_val_rollout.png" and out.stat().st_size > 1000
    assert explain(compose, f"run={mlp_ema_run}", "n=3", "method=gradcam").name == "explain_val_gradcam.png"
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    out = explain(compose, f"run={mlp_ema_run}", f"images={folder}", "method=attention")
    assert out.name == "explain_images_attention.png" and out.is_file()


def test_unknown_method_fails_at_compose_time_with_the_methods(compose):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as err:
        compose("explain", ["run=x", "method=saliency"])
    assert "auto, rollout, attention, gradcam" in str(err.value.__cause__)


@pytest.mark.parametrize("overrides, message", [
    (["images=/nonexistent/*.jpg"], "matches no image file"),
    (["n=0"], "n=0"),
    (["checkpoint=ema"], "no EMA weights"),
])
def test_bad_input_is_one_line(compose, tiny_run, capsys, overrides, message):
    with pytest.raises(SystemExit) as exit_info:
        explain(compose, f"run={tiny_run}", *overrides)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_run_without_a_checkpoint_is_one_line(cli, tiny_run_copy):
    run = tiny_run_copy
    for ckpt in (run / "checkpoints").glob("*.pt"):
        ckpt.unlink()
    proc = cli("explain", f"run={run}", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "checkpoint" in proc.stderr
