"""`vitcli models`: preset sizes read from the shipped table (no model built), checked against real models."""

from __future__ import annotations

import json

import pytest

from vitcli.core.options import group_options
from vitcli.models import catalog


def no_building(*args, **kwargs):
    raise AssertionError("a preset was built")


def test_shipped_table_covers_every_preset(monkeypatch, tmp_path):
    """Every preset's row comes from the table: a preset file that changed without the table being
    rewritten (python -m vitcli.models.catalog) fails here."""
    monkeypatch.setenv("VITCLI_CACHE", str(tmp_path))
    monkeypatch.setattr(catalog, "measure", no_building)
    rows = catalog.preset_rows()
    assert [r["preset"] for r in rows] == group_options("model")
    assert not (tmp_path / catalog.CACHED).exists()


@pytest.mark.parametrize("preset", ["vit_pico", "resnet18"])
def test_table_figures_are_those_of_the_real_model(preset):
    from vitcli.models.factory import build_timm_model

    row = catalog.preset_rows(preset)[0]
    model = build_timm_model(*catalog.build_args(preset))  # on the CPU, weights allocated
    assert row["params_m"] * 1e6 == pytest.approx(sum(p.numel() for p in model.parameters()), abs=0.5)
    assert row["input_size"] == model.pretrained_cfg["input_size"][-1]
    assert row["kind"] == ("ViT-like" if preset.startswith("vit") else "CNN")


def test_another_timm_is_measured_once_and_remembered(monkeypatch, tmp_path):
    monkeypatch.setenv("VITCLI_CACHE", str(tmp_path))
    shipped = catalog.preset_rows("vit_pico")[0]
    monkeypatch.setattr(catalog, "timm_version", lambda: "0.0-another")
    first = catalog.preset_rows("vit_pico")  # the shipped row is for the installed timm: measured
    assert {**first[0], "timm": shipped["timm"]} == shipped  # on the meta device, the same figures
    cached = json.loads((tmp_path / catalog.CACHED).read_text())
    assert [v["timm"] for v in cached.values()] == ["0.0-another"]
    monkeypatch.setattr(catalog, "measure", no_building)
    assert catalog.preset_rows("vit_pico") == first
