"""The documentation: generated pages equal the code, the site builds with --strict, the README keeps
its promises (length, the CI command, the extras table), and the contradictions of issue 26 stay fixed.
(Every command shown in the docs runs in tests/test_readme_commands.py.)"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SETUP = "python3 -m venv .venv && . .venv/bin/activate && pip install . && vitcli train"
CI = 'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[dev]" && python -m pytest -q -m "slow or not slow"'


def generator():
    spec = importlib.util.spec_from_file_location("gen_reference", REPO / "docs" / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_pages_are_what_the_code_generates():
    stale = {name: text for name, text in generator().render().items()
             if (REPO / "docs" / "reference" / name).read_text() != text}
    assert not stale, f"docs/reference/{', '.join(stale)} differ from the code: run python docs/gen_reference.py"


def test_every_schema_key_is_on_the_config_page():
    """The generator walks the schema: a key added to a group shows up with its type and default."""
    import dataclasses
    import typing

    from vitcli.core.schema import TrainConfig

    page = (REPO / "docs" / "reference" / "config.md").read_text()
    hints = typing.get_type_hints(TrainConfig)
    for group in generator().GROUPS:
        for f in dataclasses.fields(hints[group]):
            assert f"| `{group}.{f.name}" in page, f"{group}.{f.name}"


def test_the_site_builds_strict(tmp_path):
    """mkdocs build --strict: a broken link or anchor, or a page left out of nav, fails the build."""
    pytest.importorskip("mkdocs", reason="pip install -e '.[docs]'")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "tutorials" / "miniplaces" / "index.html").is_file()
    assert "Issue 18" in (tmp_path / "site" / "changelog" / "index.html").read_text()  # CHANGELOG.md included


def test_readme_is_short_and_keeps_the_setup_commands_verbatim():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    assert SETUP in text and CI in text
    assert (REPO / ".ci" / "run").read_text().strip().splitlines()[-1] == CI


def test_readme_extras_table_matches_pyproject():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {k: {re.split(r"[<>=\[ ;]", d, maxsplit=1)[0] for d in v} for k, v in extras.items()}
    rows = dict(re.findall(r"^\| `([a-z]+)` \| ([^|]+) \|", README.read_text().split("## Install", 1)[1], re.M))
    assert set(rows) == set(extras)
    for extra, cell in rows.items():
        listed = {p.strip() for p in cell.split(",")}
        if extra == "dev":  # "all of the above, ..." : dev must really include every other extra
            dev = {d.replace(" ", "") for d in extras["dev"]}
            uncovered = [e for e in extras if e != "dev" and f"vitcli[{e}]" not in dev and not names[e] <= names["dev"]]
            assert uncovered == []
            listed = {p for p in listed if p != "all of the above"}
            assert listed <= names["dev"], listed - names["dev"]
        else:
            assert listed == names[extra], (extra, listed, names[extra])


STALE = {
    "runs/<experiment>": "run dirs are runs/<name>/...",
    "resume is not bitwise": "DDP resume is bitwise on CPU (tests/test_slurm.py, tests/slurm)",
    "pip install 'vitcli[": "vitcli is installed from a clone: pip install -e '.[extra]'",
    "~98.4%": "the default run's figure is 99.07% (docs/benchmarks.md)",
    "under 2 min": "the default run takes about 70 s on 2 CPU cores (docs/benchmarks.md)",
}


@pytest.mark.parametrize("phrase", list(STALE))
def test_no_stale_statement_comes_back(phrase):
    files = [README, REPO / "CHANGELOG.md", *(REPO / "docs").rglob("*.md"), *(REPO / "conf").rglob("*.yaml")]
    found = [str(f.relative_to(REPO)) for f in files if phrase in f.read_text() and f.name != "CHANGELOG.md"]
    assert found == [], f"{STALE[phrase]}: {found}"


def test_readme_links_point_at_files_that_exist():
    """README.md is read on the forge, outside the site: its relative links must resolve in the repo."""
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    local = [t for t in targets if "://" not in t]
    assert local and [t for t in local if not (REPO / t).exists()] == []
