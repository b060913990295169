"""Roles on queues: admins change queues and templates, members launch within the limits."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from launchctl.store import Store
from tests.conftest import EXAMPLES, cli, cli_json, table_counts

HELLO = str(EXAMPLES / "hello")
ADMIN = {"LAUNCHCTL_USER": "alice"}
MEMBER = {"LAUNCHCTL_USER": "bob"}
OUTSIDER = {"LAUNCHCTL_USER": "eve"}
CONFIG = {
    "resource_args": {"local-process": {"env": {"NGPU": "{{gpus}}"}}},
    "template_variables": {"gpus": {"type": "integer", "minimum": 1, "maximum": 4, "default": 1}},
}


@pytest.fixture
def team() -> None:
    """alice runs team 'vision' with member bob and owns its queue 'vision-gpu'."""
    cli("team", "create", "vision", env=ADMIN, check=True)
    cli("team", "add", "vision", "bob", env=ADMIN, check=True)
    cli("queue", "create", "vision-gpu", "--entity", "vision", "--config", json.dumps(CONFIG),
        env=ADMIN, check=True)  # fmt: skip
    # The team's job: launches into its queue use the jobs of its entity, written by members.
    cli("job", "create", "code", HELLO, "-E", "python train.py", "-e", "vision", env=ADMIN,
        check=True)  # fmt: skip


def test_a_member_launches_within_the_limits(team: None) -> None:
    run = json.loads(cli("launch", "-q", "vision-gpu", "-j", "hello", "--set-var", "gpus=2",
                         "--json", env=MEMBER, check=True).stdout)  # fmt: skip
    assert run["spec"]["template_variables"] == {"gpus": 2} and run["spec"]["author"] == "bob"


def test_a_member_setting_a_value_out_of_range_is_refused(team: None, home: Path) -> None:
    before = table_counts(home)
    proc = cli("launch", "-q", "vision-gpu", "-j", "hello", "--set-var", "gpus=9", env=MEMBER)
    assert proc.returncode == 1
    assert "template variable gpus: value 9 is above the maximum 4" in proc.stderr
    assert table_counts(home) == before


def test_a_member_may_set_only_template_variables(team: None, home: Path) -> None:
    before = table_counts(home)
    proc = cli("launch", "-q", "vision-gpu", "-j", "hello",
               "-R", '{"local-process": {"env": {"NGPU": "8"}}}', env=MEMBER)  # fmt: skip
    assert proc.returncode == 1
    assert "user 'bob' is a member of entity 'vision', not an admin" in proc.stderr
    assert "not --resource-args (-R)" in proc.stderr
    assert table_counts(home) == before
    # The admin may.
    cli("launch", "-q", "vision-gpu", "-j", "hello", "-R", '{"local-process": {"env": {"X": "1"}}}',
        env=ADMIN, check=True)  # fmt: skip


def test_a_non_member_is_refused_by_name(team: None, home: Path) -> None:
    before = table_counts(home)
    proc = cli("launch", "-q", "vision-gpu", "-j", "hello", env=OUTSIDER)
    assert proc.returncode == 1
    assert "user 'eve' is not a member of entity 'vision'" in proc.stderr
    assert table_counts(home) == before


def test_only_admins_change_queues_and_templates(team: None, home: Path) -> None:
    before = table_counts(home)
    for args in (
        ["queue", "edit", "vision-gpu", "--config", "{}"],
        ["queue", "pause", "vision-gpu"],
        ["queue", "delete", "vision-gpu"],
        ["queue", "template", "set", "vision-gpu", "gpus", "--type", "integer", "--max", "8"],
        ["queue", "create", "mine", "--entity", "vision"],
    ):
        proc = cli(*args, env=MEMBER)
        assert proc.returncode == 1, args
        assert "user 'bob' is not an admin of entity 'vision'" in proc.stderr, proc.stderr
    assert table_counts(home) == before
    # An admin changing the limits: the new maximum applies to members at once.
    cli("queue", "template", "set", "vision-gpu", "gpus", "--type", "integer", "--min", "1",
        "--max", "8", "--default", "1", env=ADMIN, check=True)  # fmt: skip
    cli("launch", "-q", "vision-gpu", "-j", "hello", "-v", "gpus=8", env=MEMBER, check=True)


def test_a_member_can_make_queues_in_their_own_entity() -> None:
    cli("queue", "create", "bobs", env=MEMBER, check=True)
    assert cli_json("queue", "show", "bobs")["entity"] == "bob"


def test_the_agent_refuses_a_run_whose_author_was_edited_to_an_outsider(
    team: None, store: Store, home: Path
) -> None:
    run_id = cli("launch", "-q", "vision-gpu", "-j", "hello", env=MEMBER, check=True).stdout.strip()
    conn = sqlite3.connect(home / "launchctl.db")
    spec = json.loads(conn.execute("SELECT spec FROM runs WHERE id = ?", [run_id]).fetchone()[0])
    spec["author"] = "eve"
    conn.execute("UPDATE runs SET spec = ? WHERE id = ?", [json.dumps(spec), run_id])
    conn.commit()
    conn.close()
    cli("agent", "-q", "vision-gpu", "--burst", env=ADMIN, check=True)
    run = store.runs.get(run_id)
    assert (run["state"], run["stage"]) == ("failed", "agent")
    assert "user 'eve' is not a member of entity 'vision'" in run["reason"]
