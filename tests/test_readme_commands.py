"""The README's commands table, as written, is a test: every command answers `--help`, and its
documented minimal form (optional [...] parts left out; DIR and PATH filled with a copy of the
shared tiny run, an image folder or a small image-folder dataset) runs to a clean exit.

The forms run in this process through `vitcli.cli.main` (the real dispatch and Hydra apps,
without a Python and torch start-up each); `vitcli models` also runs as a real process.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from jpeg_trees import make_imagefolder
from PIL import Image

from vitcli.cli import COMMANDS

README = Path(__file__).resolve().parents[1] / "README.md"


def table_commands() -> list[str]:
    """The first cell of every row of the README's commands table, unescaped."""
    section = README.read_text().split("## Commands", 1)[1].split("\n## ", 1)[0]
    return [cell.replace("\\|", "|") for cell in re.findall(r"^\| `(vitcli [^`]+)` \|", section, re.M)]


def minimal_form(line: str) -> list[str]:
    """'vitcli eval run=DIR [split=val]' -> ['eval', 'run=DIR']."""
    return re.sub(r"\s*\[[^\]]*\]", "", line).split()[1:]


@pytest.fixture(scope="module")
def places(tiny_run, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("readme")
    runs = [Path(shutil.copytree(tiny_run, root / "runs" / "tiny" / name)) for name in ("a", "b")]
    images = root / "photos"
    images.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(images / f"p{k}.png")
    return {"cwd": root, "run": runs[0], "run_b": runs[1], "images": images,
            "dataset": make_imagefolder(root / "folder", per_class=2, size=16)}


def fill(args: list[str], places: dict[str, Path], tiny: list[str]) -> list[str]:
    out = []
    for a in args:
        if a == "train":
            out += ["train", *tiny, f"hydra.run.dir={places['cwd'] / 'trained'}"]
            continue
        a = a.replace("runs=[DIR,DIR]", f"runs=[{places['run']},{places['run_b']}]")
        a = a.replace("data.root=DIR", f"data.root={places['dataset']}").replace("run=DIR", f"run={places['run']}")
        out.append(a.replace("images=PATH", f"images={places['images']}"))
    return out


def run_in_process(args: list[str], cwd: Path, capfd, monkeypatch) -> tuple[int, str, str]:
    from vitcli import cli

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["vitcli"])
    capfd.readouterr()
    try:
        cli.main(args)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capfd.readouterr()
    return code, out, err


def test_the_table_lists_every_command():
    assert {minimal_form(line)[0] for line in table_commands()} == set(COMMANDS)


@pytest.mark.parametrize("line", table_commands())
def test_documented_minimal_form_runs(line, places, tiny_overrides, capfd, monkeypatch):
    args = fill(minimal_form(line), places, tiny_overrides)
    assert not any(p in " ".join(args) for p in ("DIR", "PATH", "...")), args
    code, out, err = run_in_process(args, places["cwd"], capfd, monkeypatch)
    assert code == 0 and "Traceback" not in out + err, f"{' '.join(args)} -> {code}\n{out}\n{err}"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_of_every_command(command, capfd, monkeypatch, tmp_path):
    code, out, err = run_in_process([command, "--help"], tmp_path, capfd, monkeypatch)
    assert code == 0 and "Traceback" not in out + err and "keys (key=default (type) what it does):" in out, out + err


def test_models_bare_in_a_real_process(cli, tmp_path):
    proc = cli("models", cwd=tmp_path)
    assert "vit_pico" in proc.stdout and "resnet18" in proc.stdout and "CNN" in proc.stdout
