"""Bad sweeper input: one line on stderr and exit status 2 (HYDRA_FULL_ERROR=1 re-raises).

A private module (leading underscore): Hydra's plugin scan executes every public module of
hydra_plugins again, which would make a second SweeperConfigError class that the first one's
handlers do not catch; private modules are imported once."""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable

EXIT_USER_ERROR = 2


class SweeperConfigError(ValueError):
    """A problem with hydra.sweeper.* or the storage; the message says what, where, what to do."""


def one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Report `SweeperConfigError` as `vitcli: error: ...` instead of Hydra's traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SweeperConfigError as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"vitcli: error: {err}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)

    return wrapper
