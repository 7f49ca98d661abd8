"""vitcli export: a timm folder plain timm reloads (fresh process, no vitcli), ONNX parity, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vitcli.core.errors import UserError


def train_in_process(compose, tiny_overrides, run_dir: Path, *overrides: str) -> Path:
    """A one-epoch tiny run without a subprocess (the trainer writes config.yaml and checkpoints)."""
    from vitcli.engine.trainer import Trainer

    over = [o for o in tiny_overrides if not o.startswith(("model=", "model.patch_size", "trainer.epochs"))]
    cfg = compose("train", [*over, "data.num_samples=96", "trainer.epochs=1", "trainer.progress=none", *overrides])
    Trainer(cfg, run_dir).fit()
    return run_dir


FAMILIES = {
    "vit": ["model=vit_pico", "model.patch_size=4"],
    "deit_distilled": ["model=deit_t_distilled", "model.patch_size=4", "+model.kwargs.depth=1"],
    "swin": ["model=swin_t", "data.img_size=32", "+model.kwargs.depths=[1,1,1,1]", "+model.kwargs.embed_dim=24"],
    "mixer": ["model=mixer_s", "model.patch_size=4", "+model.kwargs.num_blocks=1"],
    "cnn": ["model=resnet18"],
}


@pytest.fixture(scope="session")
def family_runs(compose, tiny_overrides, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export_runs")
    runs = {name: train_in_process(compose, tiny_overrides, root / name, *over) for name, over in FAMILIES.items()}
    runs["vit_mlp"] = train_in_process(compose, tiny_overrides, root / "vit_mlp", *FAMILIES["vit"], "model.head=mlp")
    return runs


RELOAD = r"""
import json, sys, timm, torch
folder, tensors = sys.argv[1], sys.argv[2]
model = timm.create_model("local-dir:" + folder, pretrained=True).eval()
data = torch.load(tensors)
with torch.no_grad():
    got = model(data["x"])
cfg = timm.data.resolve_model_data_config(model)
print(json.dumps({"diff": (got - data["logits"]).abs().max().item(), "vitcli_imported": any(m.startswith("vitcli") for m in sys.modules),
                  "mean": list(cfg["mean"]), "input_size": list(cfg["input_size"]), "labels": model.pretrained_cfg.get("label_names")}))
"""


def test_timm_folder_reloads_in_a_fresh_process_without_vitcli(family_runs, tmp_path):
    from vitcli.models.run_model import load_run_model
    from vitcli.tasks.export import export_run

    run = family_runs["vit"]
    out = export_run(run, "best", "timm", str(tmp_path / "folder"))
    cfg, model, state, _ = load_run_model(run, "best", "cpu")
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.save({"x": x, "logits": model(x)}, tmp_path / "io.pt")
    proc = subprocess.run([sys.executable, "-c", RELOAD, str(out), str(tmp_path / "io.pt")], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["vitcli_imported"] is False
    assert result["diff"] == 0.0  # the same function, bit for bit on CPU
    assert result["input_size"] == [3, 16, 16] and result["mean"] == pytest.approx(list(cfg.data.mean))
    config = json.loads((out / "config.json").read_text())
    assert config["label_names"] == list(state["class_names"]) and config["num_classes"] == len(state["class_names"])
    assert config["model_args"]["patch_size"] == 4 and config["model_args"]["depth"] == 6


def test_run_safetensors_metadata_has_class_names_and_timm_name(family_runs):
    from safetensors import safe_open

    with safe_open(str(family_runs["vit"] / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["timm_name"] == "vit_tiny_patch16_224"
    assert json.loads(meta["class_names"]) == [f"class_{i}" for i in range(10)]


def test_mlp_head_timm_export_is_one_clear_error_and_leaves_nothing(family_runs, tmp_path):
    from vitcli.tasks.export import export_run

    with pytest.raises(UserError, match="head=mlp.*use format=onnx"):
        export_run(family_runs["vit_mlp"], "best", "timm", str(tmp_path / "mlp"))
    assert not (tmp_path / "mlp").exists()


@pytest.mark.parametrize("family", [*FAMILIES, "vit_mlp"])
def test_onnx_parity(family_runs, family, tmp_path):
    import onnxruntime as ort

    from vitcli.core.runs import load_run_config
    from vitcli.tasks.export import export_run, validation_images

    out = export_run(family_runs[family], "best", "onnx", str(tmp_path / "m.onnx"))
    images = validation_images(load_run_config(family_runs[family]), 5)  # a batch size the trace never saw
    logits = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"images": images.numpy()})[0]
    assert logits.shape[0] == 5


def test_onnx_parity_failure_is_refused(family_runs, tmp_path, monkeypatch):
    import vitcli.tasks.export as export

    monkeypatch.setattr(export, "ONNX_ATOL", -1.0)  # no export can meet it
    with pytest.raises(UserError, match="max abs logit difference"):
        export.export_run(family_runs["cnn"], "best", "onnx", str(tmp_path / "m.onnx"))
    assert not list(tmp_path.iterdir())


def test_bad_input_is_one_line(cli, family_runs, tmp_path, monkeypatch):
    cases = [
        (["export", f"run={tmp_path / 'nope'}"], "no such directory"),
        (["export", f"run={family_runs['vit']}", "format=onnx"], "pip install -e '.[export]'"),
    ]
    for args, message in cases:
        with monkeypatch.context() as m:
            m.setitem(sys.modules, "onnxruntime", None)  # an environment without the export extra
            proc = cli(*args, check=False, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], proc.stderr
    # an unknown format fails when the config is composed, with Hydra's message listing the formats
    proc = cli("export", f"run={family_runs['vit']}", "format=tflite", check=False, cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "'tflite'" in proc.stderr and "timm, onnx" in proc.stderr
