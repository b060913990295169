"""Teams (entities): who administers them, who may launch, and refusals by name."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from launchctl import teams
from launchctl.errors import NotFound
from launchctl.store import Store
from launchctl.teams import PermissionDenied
from tests.conftest import cli, table_counts

ALICE = {"LAUNCHCTL_USER": "alice"}
BOB = {"LAUNCHCTL_USER": "bob"}
CAROL = {"LAUNCHCTL_USER": "carol"}
EVE = {"LAUNCHCTL_USER": "eve"}


def as_user(env: dict[str, str], *args: str) -> Any:
    return json.loads(cli(*args, "--json", env=env, check=True).stdout)


def roles(entity: str) -> dict[str, str]:
    shown = as_user(ALICE, "team", "show", entity)
    return {m["user"]: m["role"] for m in shown["members"]}


def refused(env: dict[str, str], *args: str) -> str:
    proc = cli(*args, env=env)
    assert proc.returncode == 1, proc.stdout
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    return proc.stderr


@pytest.fixture
def vision() -> None:
    """Entity 'vision' with alice as admin and bob as member; the store was opened by alice."""
    cli("team", "create", "vision", env=ALICE, check=True)
    cli("team", "add", "vision", "bob", env=ALICE, check=True)


def test_the_first_user_of_a_new_store_is_admin_of_the_default_entity() -> None:
    rows = as_user(BOB, "team", "list")
    assert rows == [
        {
            "name": "bob",
            "role": "admin",
            "member_count": 1,
            "admin_count": 1,
            "queue_count": 1,
            "created_at": rows[0]["created_at"],
        }
    ]
    assert as_user(BOB, "queue", "show", "default")["entity"] == "bob"
    # A later user is not made admin of anything.
    assert [(r["name"], r["role"]) for r in as_user(EVE, "team", "list")] == [("bob", None)]


def test_an_admin_creates_an_entity_and_adds_and_removes_members(vision: None) -> None:
    out = cli("team", "add", "vision", "carol", "--admin", env=ALICE, check=True).stdout
    assert out == "added carol to vision as an admin\n"
    assert roles("vision") == {"alice": "admin", "carol": "admin", "bob": "member"}
    listed = {r["name"]: r for r in as_user(BOB, "team", "list")}
    assert listed["vision"]["role"] == "member"
    assert listed["vision"]["member_count"] == 3 and listed["vision"]["admin_count"] == 2
    lines = cli("team", "list", env=BOB, check=True).stdout.splitlines()
    assert lines[0].split() == ["ENTITY", "YOUR", "ROLE", "MEMBERS", "ADMINS", "QUEUES"]
    assert ["vision", "member", "3", "2", "0"] in [line.split() for line in lines]

    # The second admin may manage members too: demote, then remove.
    out = cli("team", "add", "vision", "alice", env=CAROL, check=True).stdout
    assert out == "alice is now a member of vision (was admin)\n"
    out = cli("team", "remove", "vision", "bob", env=CAROL, check=True).stdout
    assert out == "removed bob (member) from vision\n"
    assert roles("vision") == {"carol": "admin", "alice": "member"}
    shown = cli("team", "show", "vision", env=EVE, check=True).stdout
    assert "your role: -" in shown
    assert ["carol", "admin"] in [line.split()[:2] for line in shown.splitlines()]


@pytest.mark.parametrize("who", [BOB, EVE], ids=["member", "outsider"])
def test_a_non_admin_cannot_add_or_remove_members_and_nothing_is_written(
    vision: None, home: Path, who: dict[str, str]
) -> None:
    before = table_counts(home)
    user = who["LAUNCHCTL_USER"]
    err = refused(who, "team", "add", "vision", "mallory")
    assert err == (
        f"launchctl: error: user '{user}' is not an admin of entity 'vision':"
        " only admins may add members to 'vision'\n"
    )
    err = refused(who, "team", "add", "vision", user, "--admin")
    assert f"user '{user}' is not an admin of entity 'vision'" in err
    err = refused(who, "team", "remove", "vision", "alice")
    assert f"user '{user}' is not an admin of entity 'vision'" in err
    assert "remove members from 'vision'" in err
    assert table_counts(home) == before
    assert roles("vision") == {"alice": "admin", "bob": "member"}


def test_removing_or_demoting_the_last_admin_is_refused(vision: None, home: Path) -> None:
    before = table_counts(home)
    err = refused(ALICE, "team", "remove", "vision", "alice")
    assert "user 'alice'" in err and "last admin of entity 'vision'" in err
    assert "last admin" in refused(ALICE, "team", "add", "vision", "alice")
    assert table_counts(home) == before

    cli("team", "add", "vision", "bob", "--admin", env=ALICE, check=True)
    cli("team", "remove", "vision", "alice", env=ALICE, check=True)
    assert roles("vision") == {"bob": "admin"}


def test_refusals_for_unknown_and_duplicate_names(vision: None, home: Path) -> None:
    before = table_counts(home)
    assert "entity 'vision' already exists" in refused(BOB, "team", "create", "vision")
    assert "invalid entity name 'no good'" in refused(ALICE, "team", "create", "no good")
    assert "entity 'nope' does not exist" in refused(ALICE, "team", "add", "nope", "bob")
    assert "entity 'nope' does not exist" in refused(ALICE, "team", "show", "nope")
    assert "user 'carol' is not a member of entity 'vision'" in refused(
        ALICE, "team", "remove", "vision", "carol"
    )
    assert "invalid user name" in refused(ALICE, "team", "add", "vision", "two words")
    assert table_counts(home) == before


def test_adding_someone_twice_keeps_one_row(vision: None) -> None:
    out = cli("team", "add", "vision", "bob", env=ALICE, check=True).stdout
    assert out == "bob is already a member of vision\n"
    assert roles("vision") == {"alice": "admin", "bob": "member"}


@pytest.mark.parametrize("command", ["create", "add", "remove", "list", "show"])
def test_every_team_command_help_shows_an_example(command: str) -> None:
    out = cli("team", command, "--help", check=True).stdout
    assert "launchctl team " in out.split("Example", 1)[1]


# The core API the queue and launch commands call.


@pytest.fixture
def owned(store: Store, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("LAUNCHCTL_USER", "alice")
    teams.create(store, "vision")
    teams.add(store, "vision", "bob")
    return store


def test_require_admin_accepts_admins_and_refuses_everyone_else_by_name(owned: Store) -> None:
    assert teams.require_admin(owned, "vision", "alice") == "alice"
    assert teams.require_admin(owned, "vision") == "alice"  # the current user
    with pytest.raises(PermissionDenied) as refusal:
        teams.require_admin(owned, "vision", "bob")
    assert str(refusal.value) == (
        "user 'bob' is not an admin of entity 'vision': only admins may edit the queues of 'vision'"
    )
    with pytest.raises(PermissionDenied, match="only admins may delete queue 'gpu' of 'vision'"):
        teams.require_admin(owned, "vision", "eve", action="delete queue 'gpu' of")
    with pytest.raises(NotFound, match="entity 'nope' does not exist"):
        teams.require_admin(owned, "nope", "alice")


def test_require_member_accepts_members_and_admins(
    owned: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert teams.require_member(owned, "vision", "bob") == "bob"
    assert teams.require_member(owned, "vision", "alice") == "alice"
    with pytest.raises(PermissionDenied) as refusal:
        teams.require_member(owned, "vision", "eve")
    assert str(refusal.value) == (
        "user 'eve' is not a member of entity 'vision':"
        " only members may launch into the queues of 'vision'"
    )
    monkeypatch.setenv("LAUNCHCTL_USER", "eve")
    with pytest.raises(PermissionDenied, match="user 'eve'"):
        teams.require_member(owned, "vision")
    with pytest.raises(NotFound, match="entity 'nope' does not exist"):
        teams.require_member(owned, "nope", "bob")


def test_a_removed_member_loses_access(owned: Store) -> None:
    teams.remove(owned, "vision", "bob")
    with pytest.raises(PermissionDenied):
        teams.require_member(owned, "vision", "bob")


def test_ensure_personal_makes_the_users_own_entity_once(
    owned: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert teams.ensure_personal(owned, "bob") == "bob"
    assert owned.teams.role("bob", "bob") == "admin"
    assert teams.ensure_personal(owned, "bob") == "bob"
    assert [(m["user"], m["role"]) for m in owned.teams.members("bob")] == [("bob", "admin")]
    # An entity of that name made by someone else stays theirs.
    teams.create(owned, "carol")
    teams.ensure_personal(owned, "carol")
    assert owned.teams.role("carol", "carol") is None


def test_upgrading_an_older_store_gives_every_queue_entity_an_admin(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlite_utils import Database

    from launchctl.store.migrations import migrations

    home.mkdir()
    monkeypatch.setenv("LAUNCHCTL_USER", "alice")
    old = Database(home / "launchctl.db")
    migrations.apply(old, stop_before="m003_teams")
    old.execute(
        "INSERT INTO queues (name, entity, resource, created_at, updated_at)"
        " VALUES ('gpu', 'vision', 'local-process', 100.0, 100.0)"
    )
    old.conn.commit()
    old.close()

    monkeypatch.setenv("LAUNCHCTL_USER", "carol")
    store = Store(home)
    try:
        entities = {r["name"]: r for r in store.teams.all()}
        assert set(entities) == {"alice", "carol", "vision"}
        assert entities["vision"]["created_at"] == 100.0
        assert entities["vision"]["queue_count"] == 1
        for name in entities:
            members = [(m["user"], m["role"]) for m in store.teams.members(name)]
            assert members == [("carol", "admin")]
    finally:
        store.close()
    conn = sqlite3.connect(home / "launchctl.db")
    try:
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(
                "INSERT INTO members (entity, user, role, added_at)"
                " VALUES ('vision', 'x', 'owner', 0)"
            )
    finally:
        conn.close()
