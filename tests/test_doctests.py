"""The `>>>` examples in vitcli's docstrings run and give what they show (the factories and helpers
document themselves as timm's do). Examples marked `# doctest: +SKIP` illustrate a call that needs a
composed config, a file or a sweep; every module with another example is run here."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import vitcli

SOURCES = {m.name: Path(importlib.util.find_spec(m.name).origin)
           for m in pkgutil.walk_packages(vitcli.__path__, "vitcli.") if not m.name.endswith("__main__")}
WITH_EXAMPLES = sorted(name for name, path in SOURCES.items()
                       if any(">>>" in line and "+SKIP" not in line for line in path.read_text().splitlines()))


def test_the_examples_were_found():
    assert {"vitcli.core.appended", "vitcli.data.crops", "vitcli.data.transforms"} <= set(WITH_EXAMPLES)


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
