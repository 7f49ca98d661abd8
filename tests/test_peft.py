"""LoRA through peft: family defaults, few trainable parameters, adapter-only checkpoints that
resume bitwise, and a merged export plain timm reloads with the run's logits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from vitcli.core.errors import UserError

LORA = ["model.peft=lora", "model.lora.r=4", "model.lora.alpha=8"]


def _build(compose, *overrides):
    from vitcli.models.factory import create_model

    cfg = compose("train", list(overrides))
    return create_model(cfg.model, 5, cfg.regularization, seed=0)


def test_family_defaults_and_a_family_without_them(compose):
    from vitcli.models.lora import count, trainable_params

    vit = _build(compose, "model=vit_pico", *LORA)
    names = [n for n, p in vit.named_parameters() if p.requires_grad]
    assert names and all(".lora_" in n or ".modules_to_save." in n for n in names)
    assert any("attn.qkv.lora_A" in n for n in names) and not any("patch_embed" in n for n in names)
    assert trainable_params(vit) < count(vit) / 10
    swin = _build(compose, "model=swin_t", "data.img_size=32", "+model.kwargs.window_size=4",
                  "+model.kwargs.embed_dim=24", "+model.kwargs.depths=[1,1]", "+model.kwargs.num_heads=[1,2]", *LORA)
    assert any("attn.qkv.lora_A" in n and p.requires_grad for n, p in swin.named_parameters())
    mixer = _build(compose, "model=mixer_s", "data.img_size=32", "model.patch_size=8", *LORA)
    assert any("mlp_tokens.fc1.lora_A" in n for n, _ in mixer.named_parameters())
    with pytest.raises(UserError, match=r"model=resnet18 \(ResNet\) has no default LoRA targets; set model.lora.targets"):
        _build(compose, "model=resnet18", *LORA)
    resnet = _build(compose, "model=resnet18", *LORA, "model.lora.targets=[conv1,conv2]")
    assert any("layer1.0.conv1.lora_A" in n for n, _ in resnet.named_parameters())


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, make_trainer):
    run = tmp_path_factory.mktemp("lora") / "run"
    make_trainer(run, *LORA).fit()
    return run


def test_lora_trains_far_fewer_parameters_with_small_checkpoints(lora_run, tiny_run, read_summary):
    summary, full = read_summary(lora_run), read_summary(tiny_run)
    assert summary["status"] == "completed"
    assert summary["trainable_params"] < summary["num_params"] / 10
    assert full["trainable_params"] == full["num_params"]
    state = torch.load(lora_run / "checkpoints" / "last.pt", weights_only=True)
    assert all(".lora_" in k or ".modules_to_save." in k for k in state["model"])
    assert state["lora_base_hash"]
    size = (lora_run / "checkpoints" / "last.pt").stat().st_size
    assert size < (tiny_run / "checkpoints" / "last.pt").stat().st_size / 4


def test_lora_resumes_bitwise(lora_run, make_trainer, tmp_path):
    part = tmp_path / "part"
    make_trainer(part, *LORA, "trainer.epochs=1").fit()
    make_trainer(part, *LORA).fit()  # the same dir: resumes from last.pt for epoch 2
    done = torch.load(lora_run / "checkpoints" / "last.pt", weights_only=True)
    resumed = torch.load(part / "checkpoints" / "last.pt", weights_only=True)
    assert done["model"].keys() == resumed["model"].keys()
    for key, tensor in done["model"].items():
        assert torch.equal(tensor, resumed["model"][key]), key
    assert done["optimizer"]["state"].keys() == resumed["optimizer"]["state"].keys()


def test_changed_base_weights_are_refused(lora_run, tmp_path):
    import shutil

    from vitcli.models.run_model import load_run_model

    run = Path(shutil.copytree(lora_run, tmp_path / "run"))
    cfg = (run / "config.yaml").read_text().replace("  seed: 42", "  seed: 43")
    (run / "config.yaml").write_text(cfg)
    with pytest.raises(UserError, match="base weights"):
        load_run_model(run, device="cpu")


PLAIN_TIMM = textwrap.dedent("""
    import sys, numpy as np, timm, torch
    model = timm.create_model("local-dir:" + sys.argv[1], pretrained=True).eval()
    with torch.no_grad():
        np.save(sys.argv[3], model(torch.from_numpy(np.load(sys.argv[2]))).numpy())
    assert not any(m.split(".")[0] in ("vitcli", "peft") for m in sys.modules), "imported vitcli or peft"
""")


def test_merged_export_reloads_in_plain_timm_with_the_runs_logits(lora_run, compose, tmp_path):
    import shutil

    from vitcli.models.run_model import load_run_model
    from vitcli.tasks.export import export_run

    run = Path(shutil.copytree(lora_run, tmp_path / "run"))
    _, lora_model, _, _ = load_run_model(run, device="cpu", merge=False)
    assert type(lora_model).__name__ == "PeftModel"
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        expected = lora_model(x).numpy()
    out = export_run(run, device="cpu")
    np.save(tmp_path / "x.npy", x.numpy())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", PLAIN_TIMM, str(out), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                   check=True, env=env, cwd=tmp_path, timeout=300)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-5)
    assert json.loads((Path(out) / "config.json").read_text())["architecture"] == "vit_tiny_patch16_224"
