"""`+key=value` adds only settings the schema has: Hydra's own error suggests the `+` for a
misspelt key, which would otherwise be carried silently (vitcli/core/appended.py)."""

from __future__ import annotations

import pytest

from vitcli.core.appended import unknown_appended_key


@pytest.mark.parametrize("override, where, name", [
    ("+trainer.epoch=10", "trainer", "epoch"),
    ("++trainer.epoch=10", "trainer", "epoch"),
    ("+trainer.fsdp.reshard=false", "trainer.fsdp", "reshard"),
    ("+lr=0.1", "the config", "lr"),
    ("+optim.lr=0.1", "the config", "optim"),  # a whole new section
])
def test_a_key_the_schema_lacks_is_named(compose, override, where, name):
    cfg = compose("train", [override])  # Hydra itself appends it
    problem = unknown_appended_key(cfg, [override], [])
    assert problem.startswith(f"{override}: {where} has no setting {name} (its settings include ")
    assert problem.endswith("check the spelling and drop the '+'")


def test_the_closest_settings_are_offered(compose):
    cfg = compose("train", ["+trainer.epoch=10"])
    assert "include epochs)" in unknown_appended_key(cfg, ["+trainer.epoch=10"], [])


@pytest.mark.parametrize("override", ["+model.kwargs.qk_norm=true", "+optimizer.kwargs.foreach=false",
                                      "++trainer.epochs=3", "trainer.epochs=3"])
def test_free_form_mappings_and_known_keys_are_fine(compose, override):
    assert unknown_appended_key(compose("train", [override]), [override], []) is None


def test_a_config_group_picked_with_plus_is_fine(compose):
    cfg = compose("train", [])
    assert unknown_appended_key(cfg, ["+experiment=digits_fast", "+hydra/launcher=basic"], ["experiment"]) is None


def test_the_command_stops_with_one_line_before_any_work(cli, tmp_path):
    proc = cli("train", "+trainer.epoch=1", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "vitcli: error: +trainer.epoch=1: trainer has no setting epoch (its settings include epochs)" \
        in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
    proc = cli("models", "+patern=vit*", check=False)  # every command's config is checked
    assert proc.returncode == 2 and "+patern=vit*: the config has no setting patern" in proc.stderr
