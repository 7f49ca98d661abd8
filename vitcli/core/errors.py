"""User-facing errors: one clear line on stderr and a non-zero exit, no traceback.

Raise `UserError` for anything a user can cause (bad value, missing file, wrong
checkpoint). `HYDRA_FULL_ERROR=1` re-raises it so the full traceback is shown.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable

EXIT_USER_ERROR = 2


def printable(text: str) -> str:
    """`text` as it is when every character prints, else its repr: a name that comes from data (a
    file or a tar member) may hold control characters, which must reach neither the terminal (an
    escape sequence acts there) nor the log raw.

    >>> printable("train/a/0.png"), printable("bad\\x1b[31mRED.png")
    ('train/a/0.png', "'bad\\\\x1b[31mRED.png'")
    """
    return text if text.isprintable() else repr(text)


class UserError(Exception):
    """A problem with the user's input: the message says what, where and what to do."""


def full_errors() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def report_user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn `UserError` into `vitcli: error: ...` and exit status 2. A command's config (the first
    argument) is checked first for settings added with `+key=value` that its schema lacks (core/appended.py)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            if args and type(args[0]).__name__ == "DictConfig":
                from vitcli.core.appended import appended_key_problem  # here: it reads Hydra's state

                problem = appended_key_problem(args[0])
                if problem:
                    raise UserError(problem)
            return fn(*args, **kwargs)
        except UserError as err:
            if full_errors():
                raise
            print(f"vitcli: error: {err}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)

    return wrapper


def install_hint(extra: str) -> str:
    """The command that installs one of pyproject's optional extras into a clone's environment
    (vitcli is installed from its clone, not from PyPI): `pip install -e '.[peft]'`."""
    return f"pip install -e '.[{extra}]' (in the vitcli clone)"
