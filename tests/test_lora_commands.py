"""The documented LoRA commands (README and docs/), as written, are tests: each composes, passes the checks a run makes
before it trains and builds its LoRA model; the headline one (experiment=miniplaces_dinov2, whose
recipe freezes the backbone for its first epoch) trains end to end on a generated MiniPlaces kit
with a locally written weights file (no hub). Under LoRA, trainer.freeze_backbone_epochs=N trains
the classifier alone for N epochs, then the adapters with it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch
from jpeg_trees import make_miniplaces

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
LORA = ["model.peft=lora", "model.lora.r=4", "model.lora.alpha=8"]


def readme_lora_commands() -> list[str]:
    """Every `vitcli train ... model.peft=lora ...` command of the README and docs pages (backslash
    continuations joined, comments dropped)."""
    commands = []
    for page in PAGES:
        text = re.sub(r"\\\n\s*", " ", page.read_text())
        lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        commands += [line for line in lines if line.startswith("vitcli train ") and "model.peft=lora" in line]
    return commands


def test_the_readme_has_lora_commands():
    assert len(readme_lora_commands()) >= 3
    assert any("experiment=miniplaces_dinov2" in c for c in readme_lora_commands())


@pytest.mark.parametrize("command", readme_lora_commands())
def test_readme_lora_command_composes_and_builds(command, cli, compose, tmp_path):
    from vitcli.engine.build import validate_lora_cfg, validate_trainer_cfg
    from vitcli.models.factory import create_model
    from vitcli.models.lora import is_lora

    args = shlex.split(command)[2:]
    job = cli("train", *args, "--cfg", "job", cwd=tmp_path)
    assert re.search(r"^  peft: lora$", job.stdout, re.M), job.stdout
    cfg = compose("train", args)
    validate_trainer_cfg(cfg.trainer)  # the checks build_parts makes before anything trains
    validate_lora_cfg(cfg)
    cfg.model.pretrained = False  # no hub, no weights file: the architecture and the adapter targets are checked
    cfg.model.weights = None
    cfg.model.img_size = 112 if cfg.model.img_size is not None else None  # patches of 14 and 16
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = create_model(cfg.model, 5, cfg.regularization, seed=0)
    assert is_lora(model) and any(".lora_A." in n for n, _ in model.named_parameters())


def _dinov2_weights(path: Path, arch: dict) -> Path:
    """A locally written 'pretrained' DINOv2 file (no classifier), of the narrowed architecture."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch14_dinov2", num_classes=0, **arch)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_headline_lora_command_trains_end_to_end_without_the_hub(cli, tmp_path, read_summary):
    command = next(c for c in readme_lora_commands() if "experiment=miniplaces_dinov2" in c)
    arch = {"img_size": 28, "depth": 2, "embed_dim": 48, "num_heads": 2}  # DINOv2 ViT-S/14, narrowed
    weights = _dinov2_weights(tmp_path / "dinov2.safetensors", arch)
    kit = tmp_path / "miniplaces"
    make_miniplaces(kit, classes=4, per_class=6, val=2, size=32)
    args = [a.replace("data.root=/data/miniplaces", f"data.root={kit}") for a in shlex.split(command)[2:]]
    run = tmp_path / "run"
    proc = cli("train", *args, f"model.weights={weights}", "data.img_size=28", "+model.kwargs.depth=2",
               "+model.kwargs.embed_dim=48", "+model.kwargs.num_heads=2", "data.batch_size=8", "data.num_workers=0",
               "trainer.epochs=2", "trainer.progress=none", f"hydra.run.dir={run}", cwd=tmp_path)
    summary = read_summary(run)
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2
    assert summary["trainable_params"] < summary["num_params"] / 2
    assert "epoch 1: backbone frozen, training the classifier only" in proc.stdout + proc.stderr
    config = (run / "config.yaml").read_text()
    assert "freeze_backbone_epochs: 1" in config and "peft: lora" in config and "pretrained: true" in config
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert any(".lora_B." in k and v.abs().sum() > 0 for k, v in state["model"].items())  # epoch 2 trained them
    assert summary["model"] == "dinov2_s" and (run / "model.safetensors").is_file()


def test_freeze_backbone_epochs_under_lora_trains_the_head_alone_first(make_trainer, tmp_path):
    from vitcli.models.factory import head_parameter_names

    trainer = make_trainer(tmp_path, *LORA, "trainer.freeze_backbone_epochs=1", "trainer.epochs=2")
    model = trainer.parts.model
    head = head_parameter_names(model)
    adapters = [n for n, _ in model.named_parameters() if ".lora_" in n]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.run_epoch(0)
    after1 = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert all(torch.equal(before[n], after1[n]) for n in adapters)
    assert all(not torch.equal(before[n], after1[n]) for n in head)
    trainer.run_epoch(1)
    after2 = dict(model.named_parameters())
    assert all(not torch.equal(after1[n], after2[n]) for n in adapters if ".lora_B." in n)
    frozen = [n for n, p in after2.items() if n not in head and ".lora_" not in n]
    assert frozen and all(not after2[n].requires_grad and torch.equal(before[n], after2[n]) for n in frozen)
