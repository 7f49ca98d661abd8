"""Shell completion: the script `vitcli <command> -sc install=SHELL` prints, and the query it runs."""

from __future__ import annotations

import re

import pytest


def query(cli, line: str, shell: str = "bash") -> list[str]:
    """Run exactly what the installed script runs: COMP_LINE=... vitcli -sc query=SHELL."""
    proc = cli("-sc", f"query={shell}", env={"COMP_LINE": line, "COMP_POINT": str(len(line))})
    return proc.stdout.split()


def test_bash_script_registers_vitcli_and_queries_it(cli):
    script = cli("train", "-sc", "install=bash").stdout
    assert re.search(r"complete -o nospace -o default -F hydra_bash_completion vitcli\s*$", script)
    assert "$helper -sc query=bash" in script and 'helper="${words[0]}"' in script  # helper = vitcli


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_other_shells_install(cli, shell):
    script = cli("train", "-sc", f"install={shell}").stdout
    assert "vitcli" in script and "-sc query=" in script


def test_query_lists_config_groups_of_the_command(cli):
    choices = query(cli, "vitcli train ")
    for group in ("model=", "data=", "optimizer=", "trainer.", "experiment="):
        assert group in choices
    assert "model=vit_pico" in query(cli, "vitcli train model=vit_p")
    assert "checkpoint=" in query(cli, "vitcli export ") and "format=" in query(cli, "vitcli export ")


def test_query_completes_the_command_name(cli):
    assert query(cli, "vitcli e") == ["eval", "explain", "ensemble", "export"]
    assert "train" in query(cli, "vitcli ")
