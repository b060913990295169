"""YAML 1.1 reads a plain ``on``/``off``/``yes``/``no`` as a boolean, keys included: a
hook's ``on: [failed]`` (the form launchctl.hooks documents) would reach the check as
``{True: [...]}`` and be refused. Keys stay the words written; values keep YAML's reading."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import cli, cli_json


def test_a_yaml_queue_config_with_a_hooks_on_key_is_read_as_written(tmp_path: Path) -> None:
    config = tmp_path / "queue.yaml"
    config.write_text(
        "hooks:\n"
        "  - on: [failed, stalled]\n"
        "    command: echo ended\n"
        "stall_after: 30m\n"
        "on_stall: stop\n"
    )
    cli("queue", "create", "watched", "--config", str(config), check=True)
    shown = cli_json("queue", "show", "watched", "--json")
    hooks = shown["config"]["hooks"]
    assert hooks[0]["on"] == ["failed", "stalled"] and hooks[0]["command"] == "echo ended"


def test_yaml_booleans_as_values_are_unchanged_and_a_quoted_key_stays_a_string(
    tmp_path: Path,
) -> None:
    config = tmp_path / "agent.yaml"
    # A value `yes` is still YAML's true (an agent config's booleans accept it); a key
    # written "on" in quotes was always a string.
    config.write_text('hooks:\n  - "on": [finished]\n    notify: yes\n')
    cli("queue", "create", "q2", "--config", str(config), check=True)
    hook = cli_json("queue", "show", "q2", "--json")["config"]["hooks"][0]
    assert hook["on"] == ["finished"] and hook["notify"] is True
