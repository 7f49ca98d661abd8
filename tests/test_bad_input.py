"""Every user mistake through the real CLI: non-zero exit, no traceback, at most 3 lines on
stderr, and a message that names the setting.

To add a case, append (id, [command, *args], expected substring) to CASES. Placeholders in
args are filled from the `files` fixture: {tiny} a finished tiny run, {tmp} an empty folder,
{vit} a ViT state dict, {junk} / {empty} / {pickle} unusable weight files, {bad_run} a run
whose checkpoint is corrupt, {evil_run} a run whose checkpoint holds a pickled object,
{ckptless_run} a run with no checkpoint.
Hydra's own compose errors (unknown option / key, wrong type) keep their few-line message;
they must not offer internal `*_schema` entries as options.
"""

from __future__ import annotations

import logging
import shutil

import pytest

from conftest import TINY, vitcli

# Failures at start-up: no training happens in this file except the shared tiny run.
T = ["train", *TINY, "hydra.run.dir={tmp}/run"]
CASES: list[tuple[str, list[str], str]] = [
    # ---- train: compose errors (Hydra's message) ----
    ("unknown-model", ["train", "model=nope"], "model/nope"),
    ("unknown-data", ["train", "data=nope"], "data/nope"),
    ("unknown-augmentation", ["train", "augmentation=nope"], "augmentation/nope"),
    ("unknown-key", ["train", "model.foo=1"], "model.foo"),
    ("wrong-type", ["train", "model.patch_size=abc"], "model.patch_size"),
    ("wrong-type-epochs", ["train", "trainer.epochs=two"], "trainer.epochs"),
    # ---- train: values ----
    ("epochs-zero", [*T, "trainer.epochs=0"], "trainer.epochs"),
    ("grad-accum-zero", [*T, "trainer.grad_accum=0"], "trainer.grad_accum"),
    ("negative-lr", [*T, "optimizer.lr=-1"], "optimizer.lr"),
    ("unknown-optimizer", [*T, "optimizer.name=nope"], "optimizer.name"),
    ("unknown-device", [*T, "trainer.device=tpu"], "trainer.device"),
    ("devices-zero", [*T, "trainer.devices=0"], "trainer.devices"),
    ("unknown-precision", [*T, "trainer.precision=fp8"], "trainer.precision"),
    ("unknown-timm-name", [*T, "model.timm_name=nope_net"], "model.timm_name"),
    ("unknown-head", [*T, "model.head=conv"], "model.head"),
    ("patch-does-not-divide", [*T, "data.img_size=18", "model.patch_size=4"], "model.patch_size"),
    ("patch-does-not-divide-33", [*T, "data.img_size=33", "data.native_size=33", "model.patch_size=8"],
     "data.img_size=32 or 40"),
    ("weights-missing", [*T, "model.weights={tmp}/nope.safetensors"], "model.weights"),
    ("weights-wrong-architecture", ["train", "model=resnet18", *TINY[2:], "model.weights={vit}",
                                    "hydra.run.dir={tmp}/run"], "model.weights={vit} matched 0 of"),
    ("weights-not-tensors", [*T, "model.weights={junk}"], "model.weights"),
    ("weights-empty", [*T, "model.weights={empty}"], "model.weights"),
    ("weights-pickle", [*T, "model.weights={pickle}"], "model.weights"),
    ("imagefolder-no-root", [*T, "data=imagefolder"], "data.root"),
    ("imagefolder-missing-root", [*T, "data=imagefolder", "data.root={tmp}/nope"], "data.root"),
    ("distill-no-teacher", [*T, "distill=soft"], "distill.teacher"),
    ("distill-no-teacher-weights", [*T, "distill=soft", "distill.teacher=model:resnet18"], "distill.teacher_weights"),
    ("distill-teacher-wrong-architecture",
     [*T, "distill=soft", "distill.teacher=model:resnet18", "distill.teacher_weights={vit}"], "distill.teacher_weights"),
    ("resume-missing-run", ["train", "resume={tmp}/nope"], "resume="),
    ("sweep-all-jobs-failed", ["train", "-m", *TINY, "optimizer.lr=-1,-2", "hydra.sweep.dir={tmp}/sweep"],
     "2 of 2 jobs failed"),
    # ---- eval ----
    ("eval-no-run", ["eval"], "run"),
    ("eval-missing-run", ["eval", "run={tmp}/nope"], "run="),
    ("eval-not-a-run", ["eval", "run={tmp}"], "run="),
    ("eval-unknown-split", ["eval", "run={tiny}", "split=nope"], "split"),
    ("eval-unknown-checkpoint", ["eval", "run={tiny}", "checkpoint=nope"], "checkpoint"),
    ("eval-unknown-tta", ["eval", "run={tiny}", "eval.tta=nope"], "eval.tta"),
    ("eval-corrupt-checkpoint", ["eval", "run={bad_run}"], "best.pt"),
    ("eval-pickled-checkpoint", ["eval", "run={evil_run}"], "refusing to load"),
    # ---- predict ----
    ("predict-no-run", ["predict"], "run"),
    ("predict-missing-run", ["predict", "run={tmp}/nope"], "run="),
    ("predict-unknown-split", ["predict", "run={tiny}", "split=nope"], "split"),
    ("predict-unknown-checkpoint", ["predict", "run={tiny}", "checkpoint=nope"], "checkpoint"),
    ("predict-unknown-tta", ["predict", "run={tiny}", "eval.tta=nope"], "eval.tta"),
    ("predict-corrupt-checkpoint", ["predict", "run={bad_run}"], "best.pt"),
    # ---- ensemble ----
    ("ensemble-no-runs", ["ensemble"], "runs"),
    ("ensemble-missing-runs", ["ensemble", "runs=[{tmp}/nope]"], "runs"),
    ("ensemble-unknown-method", ["ensemble", "runs=[{tiny},{tiny}]", "method=nope", "out={tmp}/ens"], "method"),
    ("ensemble-one-member", ["ensemble", "runs=[{tiny},{tiny}]", "out={tmp}/ens"], "runs="),
    ("predict-images-match-nothing", ["predict", "run={tiny}", "images={tmp}/none"], "images="),
    # ---- export ----
    ("export-no-run", ["export"], "run"),
    ("export-missing-run", ["export", "run={tmp}/nope"], "run="),
    ("export-unknown-format", ["export", "run={tiny}", "format=tflite"], "format"),
    ("export-no-checkpoint", ["export", "run={ckptless_run}"], "checkpoints/best.pt"),
    # ---- explain ----
    ("explain-no-run", ["explain"], "run"),
    ("explain-no-checkpoint", ["explain", "run={ckptless_run}"], "checkpoints/best.pt"),
    ("explain-unknown-method", ["explain", "run={tiny}", "method=saliency"], "method"),
    ("explain-images-match-nothing", ["explain", "run={tiny}", "images={tmp}/none/*.jpg"], "images="),
    ("explain-n-zero", ["explain", "run={tiny}", "n=0"], "n=0"),
    # ---- preview ----
    ("preview-unknown-model", ["preview", "model=nope"], "model/nope"),
    ("preview-n-zero", ["preview", *TINY, "n=0", "hydra.run.dir={tmp}/preview"], "n=0"),
    # ---- prepare ----
    ("prepare-unknown-data", ["prepare", "data=nope"], "data/nope"),
    ("prepare-no-root", ["prepare", "data=imagefolder"], "data.root"),
    ("prepare-missing-root", ["prepare", "data=imagefolder", "data.root={tmp}/nope"], "data.root"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_run):
    import torch
    from safetensors.torch import save_file

    from conftest import compose
    from vitcli.models.factory import create_model

    root = tmp_path_factory.mktemp("bad_input")
    vit = create_model(compose("train", ["data.img_size=16", "model.patch_size=4"]).model, 10)
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(root / "vit.safetensors"))
    (root / "junk.safetensors").write_bytes(b"not a tensor file" * 8)
    (root / "empty.pth").write_bytes(b"")
    torch.save({"w": torch.zeros(1), "obj": logging.getLogger("x")}, root / "pickle.pth")
    runs = {"ckptless_run": root / "ckptless_run"}  # a run that failed before its first checkpoint
    runs["ckptless_run"].mkdir()
    shutil.copy(tiny_run / "config.yaml", runs["ckptless_run"] / "config.yaml")
    for name, payload in (("bad_run", b"\x00garbage"), ("evil_run", None)):
        run = root / name
        (run / "checkpoints").mkdir(parents=True)
        shutil.copy(tiny_run / "config.yaml", run / "config.yaml")
        if payload is None:
            torch.save({"model": {}, "obj": logging.getLogger("x")}, run / "checkpoints" / "best.pt")
        else:
            (run / "checkpoints" / "best.pt").write_bytes(payload)
        runs[name] = run
    return {"tiny": tiny_run, "vit": root / "vit.safetensors", "junk": root / "junk.safetensors",
            "empty": root / "empty.pth", "pickle": root / "pickle.pth", **runs}


def test_at_least_35_cases():
    assert len(CASES) >= 35 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("args, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(files, tmp_path, args, expected):
    values = {**{k: str(v) for k, v in files.items()}, "tmp": str(tmp_path)}
    proc = vitcli(*(a.format(**values) for a in args), cwd=tmp_path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Traceback" not in out
    assert "_schema" not in out  # Hydra's option lists must not offer the internal schemas
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    hydra_compose_error = any("HYDRA_FULL_ERROR" in line for line in lines)
    assert len(lines) <= (30 if hydra_compose_error else 3), proc.stderr
    assert expected.format(**values) in proc.stderr, proc.stderr
