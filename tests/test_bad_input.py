"""Every user mistake through the CLI: non-zero exit, no traceback, at most 3 lines on
stderr, and a message that names the setting.

Every case runs in this process through `vitcli.cli.main` (the same code path, without a
Python and torch start-up per case); the cases in REAL_PROCESS, one per command, also run
as a real `python -m vitcli` process, where the exit status and stderr are the shell's.

To add a case, append (id, [command, *args], expected substring) to CASES. Placeholders in
args are filled from the `files` fixture: {tiny} a finished tiny run, {tmp} an empty folder,
{vit} a ViT state dict, {junk} / {empty} / {pickle} unusable weight files, {bad_run} a run
whose checkpoint is corrupt, {evil_run} a run whose checkpoint holds a pickled object,
{ckptless_run} a run with no checkpoint; broken shards and hf datasets from data_builders.bad_data
({wds}, {wds_cut}, {wds_trunc}, {wds_nolabel}, {wds_empty}, {classes3}, {wids_pipe}, {hf}, {hf_empty}).
Hydra's own compose errors (unknown option / key, wrong type) keep their few-line message;
they must not offer internal `*_schema` entries as options.
"""

from __future__ import annotations

import logging
import shutil
import sys

import pytest
from data_builders import bad_data

# "{TINY}" stands for the tiny run's overrides (the tiny_overrides fixture), "{TINY_DATA}" for those
# without the model ones. Failures at start-up:
# nothing trains in this file but the shared tiny run.
T = ["train", "{TINY}", "hydra.run.dir={tmp}/run"]
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
    ("eval-interval-zero", [*T, "trainer.eval_interval=0"], "trainer.eval_interval=0 must be >= 1"),
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
    ("weights-wrong-architecture", ["train", "{TINY_DATA}", "model=resnet18", "model.weights={vit}",
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
    ("sweep-all-jobs-failed", ["train", "-m", "{TINY}", "optimizer.lr=-1,-2", "hydra.sweep.dir={tmp}/sweep"],
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
    ("preview-n-zero", ["preview", "{TINY}", "n=0", "hydra.run.dir={tmp}/preview"], "n=0"),
    # ---- prepare ----
    ("prepare-unknown-data", ["prepare", "data=nope"], "data/nope"),
    ("prepare-no-root", ["prepare", "data=imagefolder"], "data.root"),
    ("prepare-missing-root", ["prepare", "data=imagefolder", "data.root={tmp}/nope"], "data.root"),
    # ---- data=wds / data=hf (files from data_builders.bad_data) ----
    ("wds-missing-shard", [*T, "data=wds", "data.root={wds}", "data.train=train-000009.tar", "data.cache_dir={tmp}"],
     "train-000009.tar (data.train) does not exist"),
    ("wds-truncated-tar", [*T, "data=wds", "data.root={wds_cut}", "data.cache_dir={tmp}"],
     "train-000000.tar is truncated"),
    ("wds-corrupt-member", [*T, "data=wds", "data.root={wds_trunc}", "data.max_bad_fraction=0",
                            "data.num_workers=0", "data.cache_dir={tmp}"], "could not be decoded (more than 0%), e.g. train/"),
    ("wds-no-label-key", [*T, "data=wds", "data.root={wds_nolabel}", "data.cache_dir={tmp}"],
     "has no 'cls' member"),
    ("wds-label-out-of-range", [*T, "data=wds", "data.root={wds}", "data.classes={classes3}", "data.cache_dir={tmp}"],
     "outside 0..2"),
    ("wds-empty-split", [*T, "data=wds", "data.root={wds}", "data.val={wds_empty}", "data.cache_dir={tmp}"],
     "hold no sample"),
    ("wds-pipe-in-index", [*T, "data=wds", "data.root={wds}", "data.train={wids_pipe}", "data.cache_dir={tmp}"],
     "never from a file inside a dataset"),
    ("hf-unknown-column", [*T, "data=hf", "data.dataset={hf}", "data.image_key=photo"],
     "data.image_key=photo is not a column"),
    ("hf-empty-split", [*T, "data=hf", "data.dataset={hf_empty}", "data.cache_dir={tmp}"],
     '"validation" corresponds to no data'),
    ("hf-missing-dataset", [*T, "data=hf", "data.dataset={tmp}/nope"], "does not exist"),
    ("hf-remote-code", [*T, "data=hf", "data.dataset={hf}", "data.trust_remote_code=true"],
     "data.trust_remote_code=true"),
    ("prepare-wds-no-out", ["prepare", "format=wds", "data=digits"], "needs out=DIR"),
]


@pytest.fixture(scope="module")
def files(compose, tmp_path_factory, tiny_run):
    import torch
    from safetensors.torch import save_file

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
            "empty": root / "empty.pth", "pickle": root / "pickle.pth", **runs, **bad_data(root / "data")}


# one case per command through a real process: exit status and stderr as a shell sees them
REAL_PROCESS = ("unknown-model", "epochs-zero", "sweep-all-jobs-failed", "eval-pickled-checkpoint",
                "predict-corrupt-checkpoint", "ensemble-one-member", "export-unknown-format",
                "explain-n-zero", "preview-n-zero", "prepare-missing-root")


def test_at_least_35_cases():
    assert len(CASES) >= 35 and len({c[0] for c in CASES}) == len(CASES)
    assert set(REAL_PROCESS) <= {c[0] for c in CASES}


def in_process(args: list[str], cwd, capfd, monkeypatch) -> tuple[int, str, str]:
    """`vitcli ARGS` through vitcli.cli.main in this process: (exit status, stdout, stderr)."""
    from vitcli import cli

    monkeypatch.chdir(cwd)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", ["vitcli"])  # cli.main rewrites it for Hydra; restored after
    capfd.readouterr()
    try:
        cli.main(list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capfd.readouterr()
    return code, out, err


def check_one_clear_line(code: int, stdout: str, stderr: str, expected: str) -> None:
    out = stdout + stderr
    assert code != 0, out
    assert "Traceback" not in out
    assert "_schema" not in out  # Hydra's option lists must not offer the internal schemas
    lines = [line for line in stderr.splitlines() if line.strip()]
    hydra_compose_error = any("HYDRA_FULL_ERROR" in line for line in lines)
    assert len(lines) <= (30 if hydra_compose_error else 3), stderr
    assert expected in stderr, stderr


def expand(args: list[str], values: dict[str, str], tiny: list[str]) -> list[str]:
    out: list[str] = []
    for a in args:
        if a == "{TINY}":
            out += tiny
        elif a == "{TINY_DATA}":
            out += [o for o in tiny if not o.startswith("model")]
        else:
            out.append(a.format(**values))
    return out


@pytest.mark.parametrize("args, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(files, tiny_overrides, tmp_path, capfd, monkeypatch, args, expected):
    values = {**{k: str(v) for k, v in files.items()}, "tmp": str(tmp_path)}
    code, out, err = in_process(expand(args, values, tiny_overrides), tmp_path, capfd, monkeypatch)
    check_one_clear_line(code, out, err, expected.format(**values))


@pytest.mark.parametrize("args, expected", [c[1:] for c in CASES if c[0] in REAL_PROCESS],
                         ids=[c[0] for c in CASES if c[0] in REAL_PROCESS])
def test_bad_input_in_a_real_process(cli, files, tiny_overrides, tmp_path, args, expected):
    values = {**{k: str(v) for k, v in files.items()}, "tmp": str(tmp_path)}
    proc = cli(*expand(args, values, tiny_overrides), cwd=tmp_path, check=False)
    check_one_clear_line(proc.returncode, proc.stdout, proc.stderr, expected.format(**values))
