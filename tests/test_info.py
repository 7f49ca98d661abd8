"""`vitcli info` (what a bug report needs) and the install hints every optional extra's error gives."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pyproject_extras() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def test_info_reports_versions_device_extras_caches_and_runs(cli, fake_run, tmp_path):
    from importlib import metadata

    fake_run(tmp_path / "runs" / "exp" / "2026-01-01_00-00-00")
    proc = cli("info", f"runs_root={tmp_path / 'runs'}", env={"VITCLI_CACHE": str(tmp_path / "cache")})
    out = proc.stdout
    for dist in ("torch", "timm", "hydra-core"):
        assert f"  {dist} {metadata.version(dist)}\n" in out
    assert re.search(r"^  cpu: \d+ usable cores", out, re.M) and re.search(r"^  cuda: ", out, re.M)
    for extra in pyproject_extras():
        assert re.search(rf"^  {extra}\s+(installed|missing)", out, re.M), extra
    assert f"vitcli indexes  {tmp_path / 'cache'}" in out
    assert f"runs root {tmp_path / 'runs'}: 1 runs, newest" in out


def test_info_names_the_command_that_installs_a_missing_extra(cli, monkeypatch):
    from vitcli.commands import info

    real = info.version
    fake = {"peft": None, "onnx": "1.0"}  # peft absent; onnx older than the export extra accepts
    monkeypatch.setattr(info, "version", lambda dist: fake[dist] if dist in fake else real(dist))
    proc = cli("info")
    assert "Traceback" not in proc.stderr
    assert "  peft     missing peft: pip install -e '.[peft]'" in proc.stdout
    assert "  export   missing onnx 1.0 (needs >=1.16): pip install -e '.[export]'" in proc.stdout
    assert re.search(r"^  dev\s+missing .*peft", proc.stdout, re.M)  # dev = [..., "vitcli[peft]"]


def test_install_hint_is_a_command_that_works_from_the_clone():
    from vitcli.core.errors import install_hint

    assert install_hint("peft").startswith("pip install -e '.[peft]'")


def test_every_install_hint_names_an_extra_of_pyproject():
    """Code hints go through install_hint(extra) (the standalone sweeper and config comments write
    `pip install -e '.[extra]'` themselves);
    each extra exists in pyproject, and no hint still names the package (`pip install 'vitcli[..]'`)."""
    named, stale, raw = [], [], []
    for path in [*(ROOT / "vitcli").rglob("*.py"), *(ROOT / "hydra_plugins").rglob("*.py"), *(ROOT / "conf").rglob("*.yaml")]:
        text = path.read_text()
        named += re.findall(r"install_hint\(\s*['\"]([\w-]+)['\"]\s*\)", text)
        named += [e for group in re.findall(r"pip install -e '\.\[([\w,-]+)\]'", text) for e in group.split(",")]
        stale += [str(path)] if re.search(r"pip install\s+['\"]?vitcli\[", text) else []
        by_hand = re.findall(r"pip install[^\n]*", text) if path.suffix == ".py" and path.name != "errors.py" else []
        if "hydra_plugins" in path.parts:  # the sweeper imports nothing from vitcli: the same form, by hand
            by_hand = [h for h in by_hand if not re.match(r"pip install -e '\.\[[\w-]+\]'", h)]
        raw += [f"{path}: {h}" for h in by_hand]  # a hint written by hand, not through install_hint
    assert len(named) >= 10  # the scan sees the hints (7 code sites, the config comments)
    assert set(named) <= pyproject_extras(), set(named) - pyproject_extras()
    assert stale == [] and raw == []


@pytest.mark.parametrize("missing, call, extra", [
    ("peft", lambda: __import__("vitcli.models.lora", fromlist=["apply_lora"]).apply_lora(None, None, "vit_t", []),
     "peft"),
    ("pytorch_grad_cam", lambda: __import__("vitcli.tasks.saliency", fromlist=["x"]).gradcam_map(None, None, []),
     "explain"),
])
def test_a_missing_extra_says_how_to_install_it(monkeypatch, missing, call, extra):
    from vitcli.core.errors import UserError

    monkeypatch.setitem(sys.modules, missing, None)  # an environment without the extra
    with pytest.raises(UserError, match=re.escape(f"pip install -e '.[{extra}]'")):
        call()
