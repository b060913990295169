"""Issue 12, item 2: `queue edit --config` keeps the template definitions that
`queue template set` made and the new config does not replace; its refusal never tells
the user to run what they just ran; `queue show` says where each definition came from."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import cli, cli_json, table_counts

GPUS = ["--type", "integer", "--min", "1", "--max", "4", "--default", "1"]
WRAPPED = {
    "resource_args": {"local-container": {"shm-size": "1g"}},
    "template_variables": {"mem": {"type": "string", "default": "1g"}},
}


def _queue(name: str = "gpu") -> dict:
    return cli_json("queue", "show", name)


def test_edit_keeps_what_template_set_defined_and_the_config_uses_it() -> None:
    """The issue's scenario: a W&B-style body (it cannot hold template_variables), a field
    defined with `queue template set`, then an edit whose config uses it."""
    cli("queue", "create", "gpu", "-r", "local-container", "-c", '{"shm-size": "1g"}', check=True)
    cli("queue", "template", "set", "gpu", "gpus", *GPUS, check=True)
    proc = cli("queue", "edit", "gpu", "-c", '{"gpus": "{{gpus}}", "shm-size": "1g"}')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "updated queue gpu\n"
    assert proc.stderr == (
        "queue gpu: kept the definitions of gpus made with `queue template set`;"
        " `queue template unset gpu FIELD` removes one\n"
    )
    shown = _queue()
    assert shown["config"]["template_variables"] == {
        "gpus": {"type": "integer", "minimum": 1, "maximum": 4, "default": 1}
    }
    assert shown["config"]["resource_args"]["local-container"]["gpus"] == "{{gpus}}"
    assert shown["template_origins"] == {"gpus": "queue template set"}
    # A launch gets the kept definition's checks.
    refused = cli("launch", "-q", "gpu", "-d", "img:1", "--set-var", "gpus=9")
    assert refused.returncode != 0 and "above the maximum 4" in refused.stderr


def test_show_says_where_each_definition_came_from() -> None:
    cli("queue", "create", "gpu", "-r", "local-container", "-c", json.dumps(WRAPPED), check=True)
    assert _queue()["template_origins"] == {"mem": "config"}
    cli("queue", "template", "set", "gpu", "gpus", *GPUS, check=True)
    # A definition of the config's own field, changed with template set, is template set's.
    cli("queue", "template", "set", "gpu", "mem", "--type", "string", "--default", "2g",
        check=True)  # fmt: skip
    shown = _queue()
    assert shown["template_origins"] == {"mem": "queue template set", "gpus": "queue template set"}
    assert shown["config_written"] == json.dumps(WRAPPED)  # what --config said, kept
    text = cli("queue", "show", "gpu", check=True).stdout
    assert "template definitions (where each came from):\n" in text
    assert "  gpus  queue template set\n  mem   queue template set\n" in text

    cli("queue", "edit", "gpu", "-c", json.dumps(WRAPPED), check=True)
    # mem is the new config's again (it defines it); gpus is kept from template set.
    assert _queue()["template_origins"] == {"mem": "config", "gpus": "queue template set"}
    text = cli("queue", "show", "gpu", check=True).stdout
    assert "  mem   the config (queue create/edit --config)\n" in text


def test_edit_replaces_the_old_configs_own_definitions() -> None:
    """What the old config defined goes with it: edit replaces the whole config."""
    cli("queue", "create", "gpu", "-r", "local-container", "-c", json.dumps(WRAPPED), check=True)
    proc = cli("queue", "edit", "gpu", "-c", '{"shm-size": "2g"}', check=True)
    assert proc.stderr == ""  # nothing kept: nothing to say
    shown = _queue()
    assert "template_variables" not in shown["config"]
    assert shown["template_origins"] == {}


def test_a_refused_edit_says_how_to_keep_the_definition_and_writes_nothing(home: Path) -> None:
    cli("queue", "create", "gpu", "-r", "local-container", "-c", json.dumps(WRAPPED), check=True)
    before = table_counts(home)
    proc = cli("queue", "edit", "gpu", "-c", '{"shm-size": "{{mem}}"}')
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    message = proc.stderr
    assert message.startswith(
        "launchctl: error: queue config (--config) uses {{mem}} but defines it nowhere:"
        " `queue edit --config` replaces the whole config, its template_variables included"
    )
    # The old config's definition, ready to copy; never "run queue edit" again.
    assert '"template_variables": {"mem": {"default": "1g", "type": "string"}}' in message
    assert "`launchctl queue edit" not in message
    assert table_counts(home) == before
    assert _queue()["config"] == WRAPPED


def test_template_set_then_unset_of_a_used_field_says_to_edit_the_config() -> None:
    cli("queue", "create", "gpu", "-r", "local-container", "-c", '{"shm-size": "1g"}', check=True)
    cli("queue", "template", "set", "gpu", "gpus", *GPUS, check=True)
    cli("queue", "edit", "gpu", "-c", '{"gpus": "{{gpus}}"}', check=True)
    proc = cli("queue", "template", "unset", "gpu", "gpus")
    assert proc.returncode == 1
    assert "queue template set" not in proc.stderr  # the opposite of what they just ran
    assert "`launchctl queue edit gpu --config ...`" in proc.stderr
    assert "gpus" in _queue()["config"]["template_variables"]


def test_create_with_an_undefined_field_names_no_command_for_a_queue_not_yet_made() -> None:
    proc = cli("queue", "create", "q", "-c", '{"resource_args": {"local-process": {"env":'
               ' {"A": "{{a}}"}}}}')  # fmt: skip
    assert proc.returncode == 1
    assert "uses {{a}} but has no definition" in proc.stderr
    assert "queue template set" not in proc.stderr  # the queue does not exist yet
    assert '"template_variables": {"a": {"type": "string"}}' in proc.stderr
