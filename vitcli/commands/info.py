"""`vitcli info`: versions, device, installed extras, cache dirs and runs root, for bug reports.

The extras are those pyproject.toml declares, as the installed package's metadata records them
(importlib.metadata); an extra counts as installed when every package it names is, at a version it
accepts. Nothing here fails on a missing optional package: that is what it reports.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

import vitcli.core.config_store  # noqa: F401  (registers the schemas)
from vitcli.core.errors import install_hint, report_user_errors

CORE = ("torch", "torchvision", "timm", "hydra-core", "omegaconf", "numpy", "pillow", "safetensors", "rich")


def version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def extra_requirements(dist: str = "vitcli") -> dict[str, list[Any]]:
    """extra -> its requirements (packaging Requirements), from the installed metadata."""
    from packaging.requirements import Requirement

    meta = metadata.metadata(dist)
    out: dict[str, list[Any]] = {extra: [] for extra in meta.get_all("Provides-Extra") or []}
    for line in metadata.requires(dist) or []:
        req = Requirement(line)
        for extra in out:
            if req.marker is not None and req.marker.evaluate({"extra": extra}):
                out[extra].append(req)
    return out


def missing_packages(extra: str, extras: dict[str, list[Any]], dist: str = "vitcli") -> list[str]:
    """What keeps an extra from being installed: each package absent or at a version it does not accept."""
    missing = []
    for req in extras.get(extra, []):
        if req.name == dist:  # dev = [..., "vitcli[sweeps]", ...]
            missing += [m for e in sorted(req.extras) for m in missing_packages(e, extras, dist)]
            continue
        have = version(req.name)
        if have is None:
            missing.append(req.name)
        elif not req.specifier.contains(have, prereleases=True):
            missing.append(f"{req.name} {have} (needs {req.specifier})")
    return missing


def device_lines() -> list[str]:
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [f"cpu: {cores} usable cores, torch threads {torch.get_num_threads()}"]
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        lines.append(f"cuda: {len(names)} x {', '.join(sorted(set(names)))} (CUDA {torch.version.cuda}, "
                     f"cuDNN {torch.backends.cudnn.version()})")
    else:
        lines.append(f"cuda: none ({'torch built without CUDA' if torch.version.cuda is None else 'no GPU visible'})")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        lines.append("mps: available")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return lines + ([f"CUDA_VISIBLE_DEVICES={visible}"] if visible is not None else [])


def cache_lines() -> list[str]:
    from vitcli.core.io import cache_dir

    home = Path(os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                / "huggingface")
    torch_home = Path(os.environ.get("TORCH_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                      / "torch")
    return [f"vitcli indexes  {cache_dir()}  (data.cache_dir, $VITCLI_CACHE)",
            f"torch hub       {torch_home / 'hub'}  ($TORCH_HOME)",
            f"HF hub (timm)   {os.environ.get('HF_HUB_CACHE') or home / 'hub'}  ($HF_HOME, $HF_HUB_CACHE)",
            f"HF datasets     {os.environ.get('HF_DATASETS_CACHE') or home / 'datasets'}  ($HF_DATASETS_CACHE)"]


def runs_line(root: str) -> str:
    from vitcli.core.run_paths import display_path, trained_runs

    path = Path(root).expanduser()
    if not path.is_dir():
        return f"runs root {path.resolve()}: none yet"
    found = trained_runs(path)
    newest = f", newest {display_path(found[0])}" if found else ""
    return f"runs root {path.resolve()}: {len(found)} runs{newest}"


def report(cfg: DictConfig) -> dict[str, Any]:
    """The report's sections as lists of lines (printed by info)."""
    packages = [f"{d} {version(d) or 'not installed'}" for d in CORE]
    try:
        extras = extra_requirements()
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        extras = {}
    extra_lines = [] if extras else ["none recorded: vitcli runs from a source tree that was never installed as a package"]
    for extra in extras:
        missing = missing_packages(extra, extras)
        names = ", ".join(sorted({r.name for r in extras[extra] if r.name != "vitcli"}))
        extra_lines.append(f"{extra:<8} installed  ({names})" if not missing else
                           f"{extra:<8} missing {', '.join(missing)}: {install_hint(extra)}")
    optional = sorted({r.name for reqs in extras.values() for r in reqs if r.name != "vitcli"})
    return {
        "vitcli": [f"vitcli {version('vitcli')} from {Path(__file__).resolve().parents[2]}",
                   f"python {platform.python_version()} ({sys.executable}) on {platform.platform()}"],
        "packages": packages + [f"{d} {version(d)}" for d in optional if version(d)],
        "device": device_lines(),
        "extras": extra_lines,
        "caches": cache_lines(),
        "runs": [runs_line(cfg.runs_root)],
    }


@report_user_errors
def show_info(cfg: DictConfig) -> dict[str, Any]:
    sections = report(cfg)
    for title, lines in sections.items():
        print(f"{title}:")
        print("\n".join(f"  {line}" for line in lines))
    return sections


@hydra.main(version_base="1.3", config_path="pkg://vitcli.conf", config_name="info")
def main(cfg: DictConfig) -> None:
    show_info(cfg)
