"""The option files of a config group, read from the packaged conf/ directory."""

from __future__ import annotations

from importlib import resources
from typing import Any

from omegaconf import OmegaConf


def group_options(group: str) -> list[str]:
    root = resources.files("vitcli.conf").joinpath(group)
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_option(group: str, name: str) -> Any:

    text = resources.files("vitcli.conf").joinpath(group, f"{name}.yaml").read_text()
    return OmegaConf.create(text)
