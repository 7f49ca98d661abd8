"""`vitcli export`: a trained run as a folder plain timm loads, or as ONNX.

format=timm writes with timm's own `save_for_hf` (model.safetensors + config.json
with the architecture, num_classes, label_names, model_args and the data config),
then rebuilds it with `timm.create_model("local-dir:OUT", pretrained=True)` and
refuses the export unless the logits match. format=onnx traces the model with a
dynamic batch axis and checks onnxruntime against torch on validation images.

The label names are the checkpoint's, compared first with the run's data like eval does
(class names and the val split; data_check=warn goes on). Data that can no longer be read
is no reason to refuse an export: the recorded names are exported, with one line saying so.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from omegaconf import OmegaConf
from timm.models import save_for_hf

from vitcli.core import runs
from vitcli.core.errors import UserError, install_hint
from vitcli.data import create_data
from vitcli.data.module import check_data, describe_data
from vitcli.models.factory import timm_kwargs
from vitcli.models.run_model import load_run_model

log = logging.getLogger("vitcli")

ONNX_CHECK_IMAGES = 32
ONNX_ATOL = 1e-4
REBUILD_ATOL = 1e-5
_DROP_ARGS = ("drop_rate", "drop_path_rate")


def default_out(run_dir: Path, checkpoint: str, fmt: str) -> Path:
    name = f"{checkpoint}_timm" if fmt == "timm" else f"{checkpoint}.onnx"
    return Path(run_dir) / runs.EXPORT / name


def export_run(run: str | Path, checkpoint: str = "best", fmt: str = "timm", out: str | None = None,
               device: str = "cpu", data_check: str = "strict") -> Path:
    """Export a run's checkpoint; returns the folder (timm) or file (onnx) written."""
    if fmt == "onnx":
        require_onnx()
    cfg, model, state, runtime = load_run_model(Path(run), checkpoint, device)
    names = class_names(cfg, state, state["checkpoint_name"], str(data_check))
    target = Path(out).expanduser() if out else default_out(Path(run), checkpoint, fmt)
    if fmt == "timm":
        export_timm(model, cfg, names, target)
    else:
        export_onnx(model, cfg, target, runtime.device)
    return target


def require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise UserError(f"format=onnx needs onnx and onnxruntime ({err}); install the extra: "
                        f"{install_hint('export')}") from err


def class_names(cfg: Any, state: dict[str, Any], where: str, data_check: str = "strict") -> list[str]:
    """The label names to export: the checkpoint's, once compared with the run's data (check_data);
    the data's for a checkpoint that records none."""
    names = [str(n) for n in state.get("class_names") or []]
    try:
        data = create_data(cfg, train=False)
    except UserError as err:
        if not names:
            raise UserError(f"{where} records no class names and the run's data cannot be read to find them "
                            f"({err})") from err
        log.warning(f"exporting the class names {where} records, unchecked: the run's data cannot be read ({err})")
        return names
    check_data(state, data, ["val"], where, describe_data(cfg.data), data_check,
               fix="restore the data the run was trained on")
    if not names:
        log.warning(f"{where} records no class names: exporting those of {describe_data(cfg.data)}")
    return names or [str(n) for n in data.class_names]


def data_config(cfg: Any) -> dict[str, Any]:
    """The run's eval preprocessing in timm's data-config terms (what `create_transform` takes)."""
    size = int(cfg.data.img_size)
    aug = cfg.augmentation
    return dict(input_size=(3, size, size), mean=tuple(float(v) for v in cfg.data.mean),
                std=tuple(float(v) for v in cfg.data.std), crop_pct=float(aug.crop_pct),
                interpolation=str(aug.interpolation), crop_mode="center")


def model_args(cfg: Any, num_classes: int) -> dict[str, Any]:
    """The constructor arguments vitcli gave timm (drop rates are training-only)."""


    args = timm_kwargs(cfg.model, num_classes)
    args = {k: v for k, v in args.items() if k not in _DROP_ARGS}
    return OmegaConf.to_container(OmegaConf.create(args), resolve=True)  # plain JSON types


def export_timm(model, cfg: Any, names: list[str], out: Path) -> None:
    """save_for_hf into `out`, then prove that plain timm rebuilds the same function."""
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    extra = dict(label_names=names, pretrained_cfg=dict(tag="vitcli"), vitcli=dict(model=cfg.model.name, timm_name=cfg.model.timm_name,
                                                head=cfg.model.head, data=cfg.data.name))
    try:
        save_for_hf(model.cpu(), str(out), model_config=extra, model_args=model_args(cfg, len(names)),
                    safe_serialization=True, data_config=data_config(cfg))
    except (ValueError, TypeError, AssertionError) as err:
        shutil.rmtree(out, ignore_errors=True)
        raise UserError(f"format=timm: timm could not save model={cfg.model.name}: {err}") from err
    problem = rebuild_problem(model, out, int(cfg.data.img_size))
    if problem:
        shutil.rmtree(out, ignore_errors=True)
        hint = " (timm has no MLP classifier option for this architecture)" if cfg.model.head == "mlp" else ""
        raise UserError(f"format=timm: plain timm cannot rebuild model={cfg.model.name} "
                        f"(head={cfg.model.head}) from config.json{hint}: {problem}; use format=onnx instead")


def rebuild_problem(model, out: Path, size: int) -> str | None:
    """None when `timm.create_model("local-dir:out", pretrained=True)` computes what `model` does."""
    timm_log = logging.getLogger("timm")
    level = timm_log.level
    timm_log.setLevel(logging.WARNING)  # timm logs every checkpoint it loads
    try:
        rebuilt = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    except Exception as err:  # any failure of timm's loader means the folder is not usable as-is
        return str(err).splitlines()[0] if str(err) else type(err).__name__
    finally:
        timm_log.setLevel(level)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = model.cpu().eval()(x), rebuilt(x)
    if want.shape != got.shape:
        return f"logits of shape {tuple(got.shape)} instead of {tuple(want.shape)}"
    diff = (want - got).abs().max().item()
    return None if diff <= REBUILD_ATOL else f"logits differ by up to {diff:.2e}"


def validation_images(cfg: Any, n: int = ONNX_CHECK_IMAGES):
    """The first n images of the run's validation split, through its eval transform."""


    batches, seen = [], 0
    for x, _ in create_data(cfg, device="cpu", train=False).loader("val"):
        batches.append(x.float())
        seen += len(x)
        if seen >= n:
            break
    return torch.cat(batches)[:n]


def export_onnx(model, cfg: Any, out: Path, device: Any = "cpu") -> None:
    """torch.onnx.export with a dynamic batch axis, then the onnxruntime parity check."""
    model = model.cpu().float().eval()
    images = validation_images(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".onnx.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python control flow on shapes
        try:
            torch.onnx.export(model, (images[:2],), str(tmp), input_names=["images"], output_names=["logits"],
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                              dynamo=False)
        except Exception as err:  # the exporter's own errors are many types
            tmp.unlink(missing_ok=True)
            raise UserError(f"format=onnx: torch.onnx.export failed for model={cfg.model.name}: "
                            f"{str(err).splitlines()[0]}") from err
    problem = onnx_parity_problem(model, tmp, images)
    if problem:
        tmp.unlink(missing_ok=True)
        raise UserError(f"format=onnx: the exported model={cfg.model.name} disagrees with torch: {problem}")
    tmp.replace(out)


def onnx_parity_problem(model, path: Path, images) -> str | None:
    """None when onnxruntime gives torch's top-1 on every image and logits within ONNX_ATOL."""
    import onnxruntime as ort

    with torch.no_grad():
        want = model(images).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"images": images.numpy()})[0]
    diff = float(np.abs(want - got).max())
    top1 = int((want.argmax(1) != got.argmax(1)).sum())
    log.info(f"onnx check on {len(images)} validation images: max |logit diff| {diff:.2e}, top-1 mismatches {top1}")
    if top1:
        return f"top-1 differs on {top1} of {len(images)} validation images"
    if diff > ONNX_ATOL:
        return f"max abs logit difference {diff:.2e} > {ONNX_ATOL:g} on {len(images)} validation images"
    return None
