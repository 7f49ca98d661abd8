"""The config schemas (core/schema.py, core/task_schemas.py) as documented keys: each dataclass field's
dotted key, type, default and the comment written beside it (or on the lines just above it).

Read from the dataclasses and their source text: nothing is composed, so a command's `--help` and the
reference pages come from the same place in milliseconds.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import functools
import inspect
import io
import sys
import tokenize
import typing
from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING


@dataclass(frozen=True)
class Entry:
    """One config key: `key=default` on a command line; `type` as a user writes values of it."""

    key: str  # dotted: model.patch_size
    type: str  # int | float | str | bool | list[float] | dict | any | a|b|c (a closed choice), |null when optional
    default: str  # as typed on a command line: null, true, 8, [0.75,1.0], ??? (required)
    doc: str  # the schema's comment ('' when the field has none)


@functools.lru_cache(maxsize=None)
def _module_docs(module_name: str) -> dict[str, tuple[str, dict[str, str]]]:
    """class name -> (docstring, field -> comment) for every top-level dataclass of a module."""
    source = inspect.getsource(sys.modules[module_name])
    trailing: dict[int, str] = {}  # line -> comment after code
    alone: dict[int, str] = {}  # line -> comment on a line of its own
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            (trailing if tok.start[0] in code_lines else alone)[tok.start[0]] = text
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.add(tok.start[0])
    out = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields = {}
        for stmt in node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                above, line = [], stmt.lineno - 1
                while line in alone:  # the comment block right above a field belongs to it
                    above.insert(0, alone[line])
                    line -= 1
                own = [trailing[ln] for ln in range(stmt.lineno, stmt.end_lineno + 1) if ln in trailing]
                fields[stmt.target.id] = "; ".join(filter(None, [" ".join(own), " ".join(above)]))
        out[node.name] = (" ".join((ast.get_docstring(node) or "").split()), fields)
    return out


def class_doc(cls: type) -> str:
    """The dataclass's docstring on one line ('' when it has none)."""
    return _module_docs(cls.__module__).get(cls.__name__, ("", {}))[0]


def field_docs(cls: type) -> dict[str, str]:
    """field -> its comment, for a dataclass and the dataclasses it inherits from."""
    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        if dataclasses.is_dataclass(base):
            docs.update(_module_docs(base.__module__).get(base.__name__, ("", {}))[1])
    return docs


def type_text(tp: Any) -> str:
    """A field's type as a user writes its values: `int|null`, `32|bf16|fp16`, `list[float]`."""
    if tp is Any:
        return "any"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "|".join(str(m.value) for m in tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        named = [type_text(a) for a in args if a is not type(None)]
        return "|".join(named + (["null"] if type(None) in args else []))
    if origin in (list, tuple):
        return f"list[{type_text(args[0])}]" if args else "list"
    if origin is dict or tp is dict:
        return "dict"
    return getattr(tp, "__name__", str(tp))


def value_text(value: Any) -> str:
    """A value as typed on a command line (Hydra's override syntax)."""
    if value is MISSING or value == "???":
        return "???"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{value_text(v)}" for k, v in value.items()) + "}"
    if value == "":
        return "''"
    return str(value)


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return MISSING


def is_schema(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def schema_fields(cls: type) -> list[tuple[str, Any, dataclasses.Field]]:
    """(name, resolved type, field) of a dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name], f) for f in dataclasses.fields(cls)]


def schema_entries(cls: type, prefix: str = "", skip: frozenset[str] = frozenset()) -> list[Entry]:
    """Every key of a schema, nested dataclasses flattened into dotted keys (model.lora.r); fields
    named in `skip` (a command's config groups, documented per group) are left out."""
    docs = field_docs(cls)
    entries = []
    for name, tp, field in schema_fields(cls):
        if name in skip:
            continue
        if is_schema(tp):
            entries += schema_entries(tp, f"{prefix}{name}.")
            continue
        entries.append(Entry(f"{prefix}{name}", type_text(tp), value_text(_default(field)), docs.get(name, "")))
    return entries
