"""The reference of every command and config group, read from the schemas and the conf/ YAML files
without composing anything: `vitcli <command> --help` prints it (format_help), the docs generate their
reference pages from it (command_reference, group_reference), so the two cannot drift apart.

- a command's keys: the fields of its schema that are not config groups, with the defaults its primary
  config (conf/<command>.yaml) composes;
- its groups: the groups its defaults list names (conf/train_defaults.yaml for train), each with its
  options and keys, the defaults being those of the option the command picks (or the one asked for);
- an option: the first comment line of its YAML is a runnable example, the rest describe it.
"""

from __future__ import annotations

import functools
import shutil
import textwrap
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any, Optional

from omegaconf import OmegaConf

from vitcli.core.command_list import COMMANDS
from vitcli.core.schema_docs import Entry, class_doc, is_schema, schema_entries, schema_fields, value_text
from vitcli.core.task_schemas import SCHEMAS

__all__ = ["Entry", "Example", "Option", "Group", "CommandReference", "command_reference", "group_reference",
           "config_groups", "format_help"]


@dataclass(frozen=True)
class Example:
    """A comment line `# vitcli train model=swin_t      what it shows`: the command and the note after it."""

    command: str
    note: str


@dataclass(frozen=True)
class Option:
    """One file of a config group (conf/<group>/<name>.yaml)."""

    name: str
    example: Optional[Example]  # its first comment line: a runnable `vitcli ...` command
    doc: str  # the other comment lines, joined
    sets: dict[str, str]  # dotted key -> value, for every key the option sets


@dataclass(frozen=True)
class Group:
    name: str  # model, data, ..., hparams_search, hydra/launcher
    doc: str  # the group schema's docstring
    default: Optional[str]  # the option chosen (None: the group is off unless asked for, as experiment=)
    options: list[Option]
    entries: list[Entry]  # the group's keys (defaults: the schema's, or the chosen option's on top)


@dataclass(frozen=True)
class CommandReference:
    name: str
    summary: str  # one line (core/command_list.py)
    doc: str  # conf/<command>.yaml's description lines
    examples: list[Example]  # its `vitcli ...` comment lines
    keys: list[Entry]  # the command's own keys, with the defaults it composes
    groups: list[Group]  # its config groups, in defaults-list order


def _conf(*parts: str) -> Any:
    return resources.files("vitcli.conf").joinpath(*parts)


@functools.lru_cache(maxsize=None)
def _read_yaml(path: str) -> tuple[list[str], dict[str, Any]]:
    """(the leading comment lines, the data) of a conf/ file given relative to conf/, without .yaml;
    a `# @package _global_` file's data is marked by a "_global_" key."""
    text = _conf(*f"{path}.yaml".split("/")).read_text()
    data = OmegaConf.to_container(OmegaConf.create(text), resolve=False) or {}  # YAML read as Hydra reads it
    if text.startswith("# @package _global_"):
        data["_global_"] = True
    comments = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            comments.append(line[2:].rstrip() if line.startswith("# ") else line[1:].rstrip())
    return comments, data


def _split_comments(comments: list[str]) -> tuple[list[Example], str]:
    """(the example commands, the description) of a leading comment block."""
    examples = []
    for line in comments:
        if line.startswith("vitcli "):  # an indented one belongs to the description
            command, _, note = line.partition("  ")  # two spaces or more end the command
            examples.append(Example(command.strip(), note.strip()))
    return examples, " ".join(c.strip() for c in comments if c.strip() and not c.startswith("vitcli "))


def _flatten(data: dict[str, Any], keys: set[str], prefix: str = "") -> dict[str, str]:
    """Dotted key -> value text of a YAML mapping; mappings stop being descended at a schema key."""
    out = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key in ("defaults", "_global_") and not prefix:
            continue
        if isinstance(value, dict) and full not in keys:
            out.update(_flatten(value, keys, f"{full}."))
        else:
            out[full] = value_text(value)
    return out


def config_groups() -> list[str]:
    """Every config group vitcli ships (model, data, ..., hydra/launcher), sorted."""
    groups = [p.name for p in _conf().iterdir() if p.is_dir() and p.name not in ("hydra", "__pycache__")]
    return sorted(groups) + ["hydra/launcher"]  # hydra/job_logging is vitcli's own plumbing


def _group_schema(group: str) -> Optional[type]:
    """The dataclass of a group (TrainConfig's field of that name), None for a global one (experiment)."""
    fields = {name: tp for name, tp, _ in schema_fields(SCHEMAS["train_schema"])}
    fields.update({name: tp for name, tp, _ in schema_fields(SCHEMAS["prepare_schema"])})
    tp = fields.get(group)
    return tp if is_schema(tp) else None


def _options(group: str, details: bool = True) -> list[Option]:
    """The options of a group; without `details` only their names (what --help lists)."""
    out = []
    for p in sorted(_conf(*group.split("/")).iterdir(), key=lambda p: p.name):
        if not p.name.endswith(".yaml"):
            continue
        if not details:
            out.append(Option(p.name[:-5], None, "", {}))
            continue
        comments, data = _read_yaml(f"{group}/{p.name[:-5]}")
        examples, doc = _split_comments(comments)
        if data.get("_global_") or group.startswith("hydra/"):  # a recipe: the groups it picks, then its keys
            picks = [d for d in data.get("defaults", []) if isinstance(d, dict)]
            sets = {k.removeprefix("override ").lstrip("/"): value_text(v) for d in picks for k, v in d.items()}
            sets.update(_flatten(data, set()))
        else:
            sets = _flatten(data, set(), f"{group}.")
        out.append(Option(p.name[:-5], examples[0] if examples else None, doc, sets))
    return out


def _keyed(entries: list[Entry], values: dict[str, str]) -> list[Entry]:
    return [replace(e, default=values[e.key]) if e.key in values else e for e in entries]


def group_reference(group: str, choice: Optional[str] = None, details: bool = True) -> Group:
    """A config group: its options (what each sets; only their names without `details`) and its keys,
    with the schema's defaults, or with the defaults the option `choice` sets on top."""
    schema = _group_schema(group)
    entries = schema_entries(schema, f"{group}.") if schema else []
    options = _options(group, details)
    if choice is not None:
        if choice not in {o.name for o in options}:
            raise KeyError(f"{group}={choice}: no such option (choose from {', '.join(o.name for o in options)})")
        data = _read_yaml(f"{group}/{choice}")[1]
        entries = _keyed(entries, _flatten(data, {e.key for e in entries}, f"{group}."))
    return Group(group, class_doc(schema) if schema else "", choice, options, entries)


def _defaults(config: str) -> tuple[str, dict[str, Optional[str]]]:
    """(the schema name, group -> chosen option) of a primary config's defaults list, following the
    configs it includes (train.yaml lists train_defaults.yaml)."""
    schema, groups = "", {}
    for item in _read_yaml(config)[1].get("defaults", []):
        if isinstance(item, str) and item.endswith("_schema"):
            schema = item
        elif isinstance(item, str) and item != "_self_":
            groups.update(_defaults(item)[1])
        elif isinstance(item, dict):
            (key, value), = item.items()
            if not key.startswith(("override ", "hydra/")):
                groups[key] = value
    return schema, groups


def command_reference(command: str, choices: Optional[dict[str, str]] = None,
                      details: bool = True) -> CommandReference:
    """A command's summary, examples, own keys and config groups; `choices` (group -> option, as
    `model=swin_t` on a command line) picks the options whose defaults are shown; without `details`
    the groups' options carry only their names."""
    if command not in COMMANDS:
        raise KeyError(f"unknown command {command!r}")
    schema_name, picked = _defaults(command)
    picked.update({g: o for g, o in (choices or {}).items() if g in picked})
    comments, data = _read_yaml(command)
    examples, doc = _split_comments(comments)
    cls = SCHEMAS[schema_name]
    own = schema_entries(cls, skip=frozenset(picked))
    keys = _keyed(own, _flatten(data, {e.key for e in own}))
    groups = [group_reference(g, o, details) for g, o in picked.items()]
    return CommandReference(command, COMMANDS[command][1], doc, examples, keys, groups)


def _entry_lines(entries: list[Entry], width: int) -> list[str]:
    lines = []
    for e in entries:
        head = f"  {e.key}={e.default}  ({e.type})"
        text = f"{head}  {e.doc}" if e.doc else head
        lines += textwrap.wrap(text, width, subsequent_indent=" " * 6, break_on_hyphens=False) or [head]
    return lines


def format_help(command: str, choices: Optional[dict[str, str]] = None, width: Optional[int] = None) -> str:
    """`vitcli <command> --help`: usage, examples, the command's groups and keys (key=default (type) doc)."""
    ref = command_reference(command, choices, details=False)
    width = width or max(60, min(120, shutil.get_terminal_size((100, 24)).columns))
    grouped = " [group=option ...]" if ref.groups else ""
    lines = [f"usage: vitcli {command} [key=value ...]{grouped} [-m] [--cfg job] [--hydra-help]", "",
             *textwrap.wrap(ref.doc or ref.summary, width), ""]
    if ref.examples:
        width_x = max(len(x.command) for x in ref.examples)
        lines += ["examples:", *(f"  {x.command:<{width_x}}  # {x.note}" if x.note else f"  {x.command}"
                                 for x in ref.examples), ""]
    if ref.groups:
        lines.append("config groups (group=option; [the default]):")
        for g in ref.groups:
            names = " ".join(f"[{o.name}]" if o.name == g.default else o.name for o in g.options)
            lines += textwrap.wrap(f"  {g.name}: {names}" + ("" if g.default else "  (off by default)"), width,
                                   subsequent_indent=" " * 6)
        lines.append("")
    lines += ["keys (key=default (type) what it does):", *_entry_lines(ref.keys, width), ""]
    for g in ref.groups:
        if g.entries:
            lines += [f"{g.name} keys ({g.name}={g.default}):", *_entry_lines(g.entries, width), ""]
    lines += textwrap.wrap(
        f"key=value sets a key, +key=value adds one, ~key removes one; quote values with braces, spaces or "
        f"globs ('data.train=train-{{000000..000127}}.tar'). vitcli {command} --cfg job [overrides] prints the "
        f"composed config; --hydra-help shows Hydra's own flags; -m runs a sweep.", width)
    return "\n".join(lines)
