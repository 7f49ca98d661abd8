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


# A ResNet of the resnet18 preset, narrowed (91k parameters): BatchNorm after every convolution.
TINY_RESNET = ["model=resnet18", "model.patch_size=null", "+model.kwargs.layers=[1,1,1,1]",
               "+model.kwargs.channels=[8,16,32,64]", "+model.kwargs.stem_width=8", "model.lora.targets=[conv1,conv2]"]
X = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))


class _EpochEndLogits:
    """A stopper that never stops: the training process's eval logits of X at each epoch end, after
    that epoch's checkpoints are written (fit() later loads best.pt into the model for the export)."""

    def __init__(self, model):
        self.model, self.logits = model, None

    def after_epoch(self, epoch, record):
        self.model.eval()
        with torch.no_grad():
            self.logits = self.model(X)


def _train_lora(run: Path, make_trainer, *overrides: str) -> dict:
    """Train a LoRA run; return its dir, the training process's eval logits of X after the last epoch and
    which running statistics (BatchNorm) the model has and which of them changed in training."""
    trainer = make_trainer(run, *LORA, *overrides)
    model = trainer.parts.model
    norms = {n: m.running_mean.clone() for n, m in model.named_modules() if getattr(m, "running_mean", None) is not None}
    capture = _EpochEndLogits(model)
    trainer.stoppers.append(capture)
    trainer.fit()
    drifted = [n for n, m in model.named_modules() if n in norms and not torch.equal(m.running_mean, norms[n])]
    return {"run": run, "logits": capture.logits, "norms": len(norms), "drifted": drifted}


@pytest.fixture(scope="module")
def lora_trained(tmp_path_factory, make_trainer):
    """vit_pico (LayerNorm only) with LoRA, trained two epochs."""
    return _train_lora(tmp_path_factory.mktemp("lora") / "run", make_trainer)


@pytest.fixture(scope="module")
def lora_run(lora_trained):
    return lora_trained["run"]


@pytest.fixture(scope="module")
def lora_bn_trained(tmp_path_factory, make_trainer):
    """A BatchNorm CNN with LoRA, trained two epochs."""
    return _train_lora(tmp_path_factory.mktemp("lora_bn") / "run", make_trainer, *TINY_RESNET)


@pytest.mark.parametrize("which", ["lora_bn_trained", "lora_trained"])
def test_eval_of_a_lora_run_gives_the_training_process_logits(which, request):
    """The frozen base's BatchNorm statistics do not drift in training (they would change the logits:
    the adapter checkpoint does not carry them, eval rebuilds the base from the config)."""
    from vitcli.models.run_model import load_run_model

    trained = request.getfixturevalue(which)
    assert (trained["norms"] > 0) == (which == "lora_bn_trained") and trained["drifted"] == []
    for merge in (False, True):
        _, model, _, _ = load_run_model(trained["run"], "last", device="cpu", merge=merge)
        with torch.no_grad():
            torch.testing.assert_close(model(X), trained["logits"], rtol=1e-4, atol=1e-5)


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


def test_grad_checkpointing_trains_the_adapters_on_every_admitted_timm(make_trainer, tmp_path):
    """Reentrant checkpointing (timm < 1.0.13 always; TIMM_REENTRANT_CKPT=1 since) gives no gradient to the
    adapters inside a block whose input needs none (the frozen patch embedding's output): only the head
    would train. vitcli checkpoints non-reentrantly, and pyproject admits no timm that ignores the switch."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.version import Version
    from timm.layers import set_reentrant_ckpt, use_reentrant_ckpt

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    timm_req = next(Requirement(r) for r in pyproject["project"]["dependencies"] if r.startswith("timm"))
    assert not timm_req.specifier.contains("1.0.12")  # calls torch's checkpoint reentrantly, no switch
    assert timm_req.specifier.contains(Version("1.0.13"))
    saved = use_reentrant_ckpt()
    set_reentrant_ckpt(True)  # what the old timm did, and what TIMM_REENTRANT_CKPT=1 does
    try:
        trainer = make_trainer(tmp_path / "run", *LORA, "trainer.grad_checkpointing=true")
        model = trainer.parts.model
        adapters = {n: p.detach().clone() for n, p in model.named_parameters() if ".lora_B." in n}
        trainer.prepare_epoch(0)
        for step, (x, y) in zip(range(3), trainer.parts.train_loader):
            trainer.forward_backward(x, y)
            trainer.optimizer_step()
    finally:
        set_reentrant_ckpt(saved)
    assert model.base_model.model.grad_checkpointing and len(adapters) == 4 * 6  # qkv, proj, fc1, fc2 x 6 blocks
    unchanged = [n for n, p in model.named_parameters() if n in adapters and torch.equal(p, adapters[n])]
    assert unchanged == []


def test_the_classifier_trains_under_lora_and_is_merged_into_model_safetensors(lora_run):
    """peft trains the head through modules_to_save; without it the head stays at its initial weights."""
    from safetensors.torch import load_file

    from vitcli.core.runs import load_run_config
    from vitcli.models.factory import create_model
    from vitcli.models.lora import merge_lora

    cfg = load_run_config(lora_run)
    initial = merge_lora(create_model(cfg.model, 10, cfg.regularization, seed=int(cfg.trainer.seed))).state_dict()
    best = torch.load(lora_run / "checkpoints" / "best.pt", weights_only=True)["model"]
    exported = load_file(lora_run / "model.safetensors")
    for name in ("head.weight", "head.bias"):
        trained = best[f"base_model.model.{name.replace('.', '.modules_to_save.default.')}"]
        assert not torch.allclose(trained, initial[name], atol=1e-4), f"{name} did not train"
        assert torch.equal(exported[name], trained)
    blocks = [k for k in exported if k.startswith("blocks.0.attn.qkv.weight")]
    assert blocks and not torch.allclose(exported[blocks[0]], initial[blocks[0]])  # the adapters, merged


def _write_base(path: Path, compose, seed: int) -> Path:
    """A local weights file of the tiny ViT's architecture (no classifier), drawn from `seed`."""
    from safetensors.torch import save_file

    from vitcli.models.factory import create_model

    torch.manual_seed(seed)
    cfg = compose("train", ["model=vit_pico", "model.patch_size=4", "data.img_size=16"])
    state = {k: v.contiguous() for k, v in create_model(cfg.model, 10).state_dict().items() if not k.startswith("head")}
    save_file(state, str(path))
    return path


def test_resume_refuses_adapters_trained_on_another_base(make_trainer, compose, tmp_path):
    run, weights = tmp_path / "run", _write_base(tmp_path / "base.safetensors", compose, seed=1)
    make_trainer(run, *LORA, f"model.weights={weights}", "trainer.epochs=1").fit()
    saved = (run / "checkpoints" / "last.pt").read_bytes()
    make_trainer(run, *LORA, f"model.weights={weights}", "trainer.epochs=1").fit()  # the same base: resumes
    _write_base(weights, compose, seed=2)  # the weights file is replaced
    with pytest.raises(UserError, match=r"checkpoints/last.pt: the base weights rebuilt from the run's config.yaml"):
        make_trainer(run, *LORA, f"model.weights={weights}", "trainer.epochs=2").fit()
    assert (run / "checkpoints" / "last.pt").read_bytes() == saved
