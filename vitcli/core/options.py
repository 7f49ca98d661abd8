"""The option files of a config group, read from the packaged conf/ directory."""

from __future__ import annotations

from importlib import resources
from typing import Any


def group_options(group: str) -> list[str]:
    root = resources.files("vitcli.conf").joinpath(group)
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_option(group: str, name: str) -> Any:
    from omegaconf import OmegaConf

    text = resources.files("vitcli.conf").joinpath(group, f"{name}.yaml").read_text()
    return OmegaConf.create(text)


def option_description(group: str, name: str) -> str:
    """The option's second comment line (the first is its runnable example)."""
    text = resources.files("vitcli.conf").joinpath(group, f"{name}.yaml").read_text()
    comments = [line[1:].strip() for line in text.splitlines()
                if line.startswith("#") and not line.startswith("# @package")]
    return comments[1] if len(comments) > 1 else ""
