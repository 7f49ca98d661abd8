"""The model presets (config group `model`) as rows of a table: the timm model behind each, its
parameter count, pretrained input size and kind.

Building every preset (even on the meta device) takes seconds of torch and timm start-up, so the
figures are read from a table: the one shipped beside this module (preset_sizes.json), else the one
this machine derived ($VITCLI_CACHE/preset_sizes.json). A row is keyed by a hash of what builds the
model (timm name, constructor kwargs, patch size) and used only when it was measured with the timm
installed; a preset that changed, or another timm, is built on the meta device (no weights allocated
or fetched) once and remembered. `python -m vitcli.models.catalog` rewrites the shipped table.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from vitcli.core.io import cache_dir, write_json
from vitcli.core.options import group_options, load_option

SHIPPED = Path(__file__).with_name("preset_sizes.json")
CACHED = "preset_sizes.json"  # under vitcli's cache dir


def model_kind(model: Any) -> str:
    """ViT-like (patch tokens: ViT, DeiT, Swin, Mixer, hybrids) or CNN."""
    tokens = hasattr(model, "patch_embed") or type(model).__name__ == "MlpMixer"
    return "ViT-like" if tokens else "CNN"


def build_args(name: str) -> tuple[str, dict[str, Any]]:
    """(timm name, constructor kwargs) of a preset, read as written (img_size may be ${data.img_size})."""
    option = load_option("model", name)
    kwargs = OmegaConf.to_container(option.get("kwargs") or OmegaConf.create({}), resolve=False)
    if option.get("patch_size"):
        kwargs["patch_size"] = option.patch_size
    return option.timm_name, kwargs


def size_key(timm_name: str, kwargs: dict[str, Any]) -> str:
    """What the figures depend on besides timm's version: the model's build arguments."""
    text = json.dumps([timm_name, kwargs], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def timm_version() -> str:
    return metadata.version("timm")


def measure(timm_name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Build the model on the meta device: parameter count (millions), pretrained input side, kind."""
    import torch

    from vitcli.models.factory import build_timm_model

    with torch.device("meta"):
        model = build_timm_model(timm_name, dict(kwargs))
    return {"timm_name": timm_name, "timm": timm_version(), "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "input_size": model.pretrained_cfg.get("input_size", (3, 224, 224))[-1], "kind": model_kind(model)}


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def preset_rows(pattern: str | None = None) -> list[dict[str, Any]]:
    """One row per preset whose name matches the glob `pattern` (all when None).

    >>> preset_rows("vit_pico")[0]["timm_name"]  # doctest: +SKIP
    'vit_tiny_patch16_224'
    """
    cached_path = cache_dir() / CACHED
    installed = timm_version()
    known = {k: v for table in (_read(SHIPPED), _read(cached_path)) for k, v in table.items()
             if v.get("timm") == installed}
    rows, new = [], {}
    for name in group_options("model"):
        if pattern and not fnmatch.fnmatch(name, pattern):
            continue
        timm_name, kwargs = build_args(name)
        key = size_key(timm_name, kwargs)
        sizes = known.get(key) or new.get(key)
        if sizes is None:
            sizes = new[key] = measure(timm_name, kwargs)
        rows.append({"preset": name, **sizes, "timm_name": timm_name})
    if new:
        try:  # remembered for the next call; a read-only cache only costs the time again
            write_json(cached_path, {**_read(cached_path), **new})
        except OSError:
            pass
    return rows


def write_shipped_table(path: Path = SHIPPED) -> dict[str, Any]:
    """Measure every preset and write the table shipped with vitcli (run when presets or timm change)."""
    table = {}
    for name in group_options("model"):
        timm_name, kwargs = build_args(name)
        table[size_key(timm_name, kwargs)] = measure(timm_name, kwargs)
    write_json(path, table)
    return table


if __name__ == "__main__":
    print(f"{len(write_shipped_table())} presets measured into {SHIPPED}")
