"""Queues through the CLI: create, list, show, edit, pause, resume, delete, validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, cli, cli_json, table_counts


def test_create_list_show_a_queue_with_a_yaml_config(tmp_path: Path) -> None:
    config = tmp_path / "q.yaml"
    config.write_text("resource_args:\n  local-process:\n    env:\n      OMP_NUM_THREADS: '2'\n")
    out = cli(
        "queue",
        "create",
        "cpu",
        "--resource",
        "local-process",
        "--config",
        str(config),
        "--description",
        "CPU work",
        check=True,
    )
    assert "created queue cpu" in out.stdout
    names = [q["name"] for q in cli_json("queue", "list")]
    assert names == ["cpu", "default"]
    shown = cli_json("queue", "show", "cpu")
    assert shown["config"] == {
        "resource_args": {"local-process": {"env": {"OMP_NUM_THREADS": "2"}}}
    }
    assert shown["description"] == "CPU work"
    assert "OMP_NUM_THREADS" in cli("queue", "show", "cpu", check=True).stdout


def test_edit_replaces_the_config_after_validating_it() -> None:
    cli("queue", "create", "q1", check=True)
    cli(
        "queue",
        "edit",
        "q1",
        "--config",
        '{"resource_args": {"local-process": {"env": {"A": "1"}}}}',
        check=True,
    )
    assert cli_json("queue", "show", "q1")["config"]["resource_args"]["local-process"]["env"] == {
        "A": "1"
    }


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            '{"resource_args": {"local-process": {"privileged": true}}}',
            "Unsupported resource_args.local-process option 'privileged'",
        ),
        ('{"resource_args": {"local-container": {}}}', "this queue runs local-process"),
        ('{"bogus": 1}', "unknown key 'bogus'"),
        ('{"resource_args": [1, 2]}', "must be an object"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON/YAML object"),
        ("missing-file.yaml", "does not exist"),
        ("", "is empty"),
        # No process can be given these: every run failed at its agent (an internal error)
        ('{"env": {"A=B": "x"}}', "'A=B' cannot be an environment variable's name"),
        ('{"env": {"": "x"}}', "'' cannot be an environment variable's name"),
        ('{"env": {"A\\u0000B": "x"}}', "'A\\x00B' cannot be an environment variable's name"),
        ('{"env": {"A": "x\\u0000y"}}', "the value of 'A' holds a NUL character"),
        ('{"env": ["A=x\\u0000"]}', "the value of 'A' holds a NUL character"),
    ],
)
def test_a_bad_queue_config_is_refused_with_one_line_and_nothing_written(
    home: Path, config: str, message: str
) -> None:
    cli("queue", "list", check=True)
    before = table_counts(home)
    proc = cli("queue", "create", "bad", "--config", config)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr
    assert table_counts(home) == before
    proc = cli("queue", "edit", "default", "--config", config)
    assert proc.returncode == 1 and message in proc.stderr
    assert cli_json("queue", "show", "default")["config"] == {}


def test_unknown_resource_and_duplicate_names_are_refused() -> None:
    proc = cli("queue", "create", "x", "--resource", "ec2")
    assert proc.returncode == 1 and "unknown resource 'ec2'" in proc.stderr
    proc = cli("queue", "create", "default")
    assert proc.returncode == 1 and "already exists" in proc.stderr
    proc = cli("queue", "create", "bad name!")
    assert proc.returncode == 1 and "invalid queue name" in proc.stderr


def test_pause_and_resume_show_in_the_listing() -> None:
    cli("queue", "pause", "default", check=True)
    assert cli_json("queue", "show", "default")["paused"] is True
    cli("queue", "resume", "default", check=True)
    assert cli_json("queue", "show", "default")["paused"] is False
    proc = cli("queue", "pause", "nope")
    assert proc.returncode == 1 and "queue 'nope' does not exist" in proc.stderr


def test_delete_refuses_while_runs_are_queued_unless_forced() -> None:
    cli("queue", "create", "scratch", check=True)
    run_id = cli(
        "launch",
        "-q",
        "scratch",
        "-u",
        str(EXAMPLES / "hello"),
        "-E",
        "python train.py",
        check=True,
    ).stdout.strip()
    proc = cli("queue", "delete", "scratch")
    assert proc.returncode == 1 and "1 queued" in proc.stderr and "--force" in proc.stderr
    assert cli_json("runs", "show", run_id)["state"] == "queued"
    cli("queue", "delete", "scratch", "--force", check=True)
    run = cli_json("runs", "show", run_id)
    assert run["state"] == "stopped" and run["reason"] == "queue deleted"
    assert "scratch" not in json.dumps([q["name"] for q in cli_json("queue", "list")])
