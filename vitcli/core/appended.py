"""Settings added with `+key=value` / `++key=value` must exist in the schema.

A plain `trainer.epoch=10` (a typo) is refused by the structured config; Hydra's error then suggests
`+trainer.epoch=10`, which Hydra appends to any config, so the typo would be carried silently and
the run would train for the default 40 epochs. A `+` override of a config group (`+experiment=x`)
or of a key under a free-form mapping (`+model.kwargs.foo=1`, `+optimizer.kwargs.foo=1`) is fine;
a key a dataclass section does not define is not.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable


def unknown_appended_key(cfg: Any, overrides: Iterable[str], groups: Iterable[str]) -> str | None:
    """The first `+`/`++` override that adds a key its schema section lacks, as a one-line message (None: none).

    Args:
        cfg: the composed config (structured: sections keep their dataclass type).
        overrides: the command line's task overrides, as Hydra recorded them.
        groups: the config groups chosen (Hydra's runtime.choices keys): `+group=option` picks one.

    >>> from omegaconf import OmegaConf
    >>> from vitcli.core.schema import TrainConfig
    >>> cfg = OmegaConf.structured(TrainConfig)
    >>> unknown_appended_key(cfg, ["+trainer.epoch=10"], []).split(" (")[0]
    '+trainer.epoch=10: trainer has no setting epoch'
    >>> unknown_appended_key(cfg, ["trainer.epochs=10", "+experiment=x"], ["experiment"]) is None
    True
    """
    from omegaconf import DictConfig, OmegaConf

    groups = set(groups)
    for text in overrides:
        if not text.startswith("+"):
            continue
        key = text.lstrip("+").split("=", 1)[0].strip()
        if key in groups or "/" in key or "@" in key:  # a config group picked, not a value set
            continue
        # walk down the schema sections the key names, to the first part its section does not define
        parts, parent, depth = key.split("."), cfg, 0
        while True:
            schema = OmegaConf.get_type(parent) if isinstance(parent, DictConfig) else None
            if schema is None or not dataclasses.is_dataclass(schema):
                break  # a free-form mapping (kwargs): anything goes below it
            known = [f.name for f in dataclasses.fields(schema)]
            if parts[depth] not in known or depth == len(parts) - 1:
                break
            parent, depth = parent[parts[depth]], depth + 1
        parent_path, name = ".".join(parts[:depth]), parts[depth]
        if schema is not None and dataclasses.is_dataclass(schema) and name not in known:
            where = parent_path or "the config"
            close = [k for k in known if k.startswith(name[:3])][:4] or known[:6]
            return (f"{text}: {where} has no setting {name} (its settings include {', '.join(close)}); "
                    "check the spelling and drop the '+'")
    return None


def appended_key_problem(cfg: Any) -> str | None:
    """unknown_appended_key for the running Hydra app's own overrides (None outside one)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    return unknown_appended_key(cfg, hydra_cfg.overrides.task, hydra_cfg.runtime.choices.keys())
