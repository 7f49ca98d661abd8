"""core/reference.py: every command's keys and groups read from the schemas and conf/ without composing;
what `vitcli <command> --help` prints and what the docs' reference pages are generated from."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from vitcli.core.command_list import COMMANDS
from vitcli.core.reference import command_reference, config_groups, group_reference
from vitcli.core.schema_docs import value_text


def composed_keys(cfg, schema_keys: set[str]) -> dict[str, str]:
    """Dotted key -> value text of a composed config; a mapping stops being descended at a schema key."""
    out = {}

    def walk(node, prefix):
        for key, value in node.items():
            full = f"{prefix}{key}"
            if isinstance(value, dict) and full not in schema_keys:
                walk(value, f"{full}.")
            else:
                out[full] = value_text(value)

    walk(OmegaConf.to_container(cfg, resolve=False, enum_to_str=False), "")
    return out


@pytest.mark.parametrize("command", list(COMMANDS))
def test_reference_lists_exactly_what_hydra_composes(compose, command):
    """The keys and defaults read without Hydra are the ones Hydra composes for the command: the two
    cannot drift apart (a new schema field, group or option default shows up in --help and the docs)."""
    ref = command_reference(command)
    entries = {e.key: e.default for e in ref.keys + [e for g in ref.groups for e in g.entries]}
    composed = composed_keys(compose(command), set(entries))
    assert entries == composed


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_key_says_what_it_does(command):
    """Each key a command takes carries the schema's comment (the help and the reference show it)."""
    ref = command_reference(command)
    silent = [e.key for e in ref.keys + [e for g in ref.groups for e in g.entries] if not e.doc]
    assert silent == []


def test_group_choices_change_the_defaults_shown():
    model = {e.key: e for e in command_reference("train", {"model": "swin_t"}).groups[0].entries}
    assert model["model.timm_name"].default == "swin_tiny_patch4_window7_224"
    assert model["model.patch_size"].default == "null" and model["model.patch_size"].type == "int|null"
    pico = {e.key: e for e in command_reference("train").groups[0].entries}
    assert pico["model.patch_size"].default == "8"  # vit_pico's, over the schema's null
    assert {e.key: e.default for e in group_reference("model").entries}["model.patch_size"] == "null"
    with pytest.raises(KeyError, match="model=nope: no such option"):
        command_reference("train", {"model": "nope"})


def test_types_and_comments_come_from_the_schema():
    keys = {e.key: e for e in command_reference("eval").keys}
    assert keys["checkpoint"].type == "best|last|ema" and keys["checkpoint"].default == "best"
    assert keys["run"].default == "???" and "latest" in keys["run"].doc
    assert keys["precision"].type == "32|bf16|fp16|null"
    assert keys["eval.tta"].doc.startswith("test-time augmentation")
    data = {e.key: e for e in group_reference("data").entries}
    # a comment block above a field belongs to it, after the line's own comment
    assert data["data.mean"].doc.startswith("auto | three floats; auto: the weights' own statistics")
    assert data["data.train"].type == "any" and "shard patterns" in data["data.train"].doc
    assert group_reference("augmentation").doc.startswith("Train-time augmentation")


def test_every_option_opens_with_a_runnable_example():
    """The design's rule: the first comment line of every option file is a `vitcli ...` command."""
    missing = [f"{g}/{o.name}" for g in config_groups() for o in group_reference(g).options
               if o.example is None or not o.example.command.startswith("vitcli ")]
    assert missing == []


def test_recipes_say_what_they_set():
    clip = {o.name: o for o in group_reference("experiment").options}["miniplaces_clip"]
    assert clip.sets["model"] == "clip_b16" and clip.sets["trainer.precision"] == "fp16"
    assert clip.example.command.startswith("vitcli train -m experiment=miniplaces_clip")
    assert clip.example.note == "(runs its lr grid)"
    swin = {o.name: o for o in group_reference("model").options}["swin_t"]
    assert swin.sets["model.timm_name"] == "swin_tiny_patch4_window7_224"


def test_commands_list_only_their_own_groups():
    assert [g.name for g in command_reference("eval").groups] == []
    assert [g.name for g in command_reference("prepare").groups] == ["data"]
    assert [g.name for g in command_reference("train").groups][:3] == ["model", "data", "augmentation"]
    assert {g.name: g.default for g in command_reference("train").groups}["experiment"] is None
