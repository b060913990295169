"""The store: one SQLite file with WAL, a busy timeout, foreign keys and migrations."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from launchctl.errors import StateConflict
from launchctl.states import ALLOWED, TERMINAL, State, move, sources_of
from launchctl.store import Store
from launchctl.store.migrations import NAMES


def test_store_is_one_file_under_launchctl_home(home: Path, store: Store) -> None:
    assert (home / "launchctl.db").is_file()
    mode = store.db.one("PRAGMA journal_mode")
    assert mode is not None and mode["journal_mode"] == "wal"
    fk = store.db.one("PRAGMA foreign_keys")
    assert fk is not None and fk["foreign_keys"] == 1
    timeout = store.db.one("PRAGMA busy_timeout")
    assert timeout is not None and timeout["timeout"] >= 5000


def test_migrations_are_applied_once_and_recorded(home: Path) -> None:
    Store(home).close()
    Store(home).close()
    conn = sqlite3.connect(home / "launchctl.db")
    applied = conn.execute(
        "SELECT name FROM _sqlite_migrations WHERE migration_set = 'launchctl'"
    ).fetchall()
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert applied == [(name,) for name in NAMES]
    assert NAMES[:3] == ["m001_initial", "m002_run_image", "m003_teams"]
    assert {"queues", "jobs", "job_versions", "runs", "events", "agents"} <= tables


def test_default_queue_exists_from_the_first_open(store: Store) -> None:
    queue = store.queues.get("default")
    assert queue["resource"] == "local-process"


def test_many_processes_opening_a_new_store_at_once_migrate_it_once(home: Path) -> None:
    code = "from launchctl.store import Store; Store().queues.get('default')"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(6)]
    assert [p.wait(timeout=60) for p in procs] == [0] * 6
    conn = sqlite3.connect(home / "launchctl.db")
    assert conn.execute("SELECT COUNT(*) FROM queues WHERE name = 'default'").fetchone()[0] == 1
    assert conn.execute("SELECT COUNT(*) FROM _sqlite_migrations").fetchone()[0] == len(NAMES)


def _queued_run(store: Store) -> str:
    from launchctl.launch import new_run_id

    run_id = new_run_id()
    store.runs.insert(
        {
            "id": run_id,
            "queue_id": 1,
            "queue_name": "default",
            "job_version_id": None,
            "name": "r",
            "project": "p",
            "entity": "e",
            "resource": "local-process",
            "spec": {},
            "priority": 2,
        }
    )
    return run_id


def test_every_state_change_is_a_guarded_update_with_an_event(store: Store) -> None:
    run_id = _queued_run(store)
    claimed = store.runs.claim_next(1, "agent-a", 30)
    assert claimed is not None and claimed["id"] == run_id
    move(store, run_id, State.STARTING, agent_id="agent-a")
    move(store, run_id, State.RUNNING, agent_id="agent-a")
    move(store, run_id, State.FINISHED, agent_id="agent-a", exit_code=0)
    with pytest.raises(StateConflict):
        move(store, run_id, State.STOPPED)  # already terminal: the guard refuses
    events = [(e["from_state"], e["to_state"]) for e in store.runs.events(run_id)]
    assert events == [
        (None, "queued"),
        ("queued", "claimed"),
        ("claimed", "starting"),
        ("starting", "running"),
        ("running", "finished"),
    ]


def test_another_agent_cannot_move_a_run_it_does_not_hold(store: Store) -> None:
    run_id = _queued_run(store)
    store.runs.claim_next(1, "agent-a", 30)
    with pytest.raises(StateConflict):
        move(store, run_id, State.STARTING, agent_id="agent-b")
    assert store.runs.state(run_id) == "claimed"


def test_terminal_states_have_no_way_out() -> None:
    for state in TERMINAL:
        assert ALLOWED[state] == frozenset()
    assert State.QUEUED in ALLOWED[State.PREEMPTED]
    assert State.CLAIMED in sources_of(State.STARTING)


def test_second_agent_cannot_claim_a_claimed_run(store: Store, home: Path) -> None:
    _queued_run(store)
    other = Store(home)
    first = store.runs.claim_next(1, "agent-a", 30)
    second = other.runs.claim_next(1, "agent-b", 30)
    assert first is not None and second is None


def test_a_write_inside_a_write_is_undone_alone_and_commits_with_the_outer_one(
    store: Store, home: Path
) -> None:
    """Issue 17: the agent claims a run and moves it to starting in one commit. A write
    inside a write of the same connection is a savepoint: what fails inside is undone alone;
    nothing is seen by another connection before the outermost write commits; an error
    that leaves the outermost write undoes all of it."""
    first, second, third = (_queued_run(store) for _ in range(3))
    other = Store(home)  # another process's view
    with store.db.write():
        assert store.runs.claim_next(1, "agent-a", 30)["id"] == first
        with pytest.raises(StateConflict):  # held by agent-a: agent-b's move fails, alone
            move(store, first, State.STARTING, agent_id="agent-b")
        move(store, first, State.STARTING, agent_id="agent-a")
        assert other.runs.state(first) == "queued"  # not committed yet
    assert other.runs.state(first) == "starting"
    events = [(e["from_state"], e["to_state"]) for e in other.runs.events(first)]
    assert events[-2:] == [("queued", "claimed"), ("claimed", "starting")]
    with pytest.raises(RuntimeError, match="boom"), store.db.write():
        assert store.runs.claim_next(1, "agent-a", 30)["id"] == second
        move(store, second, State.STARTING, agent_id="agent-a")
        raise RuntimeError("boom")
    assert other.runs.state(second) == "queued"  # the whole write undone
    assert [e["to_state"] for e in other.runs.events(second)] == ["queued"]
    assert other.runs.state(third) == "queued"
    # The savepoints leave no transaction open behind them.
    assert not store.db.conn.in_transaction
    move(store, second, State.CLAIMED, agent_id="agent-a")
    assert other.runs.state(second) == "claimed"


def test_another_threads_write_on_a_shared_connection_waits_and_is_not_nested(
    store: Store,
) -> None:
    """A write is nested only in its own thread's write: another thread using the same
    connection waits for the outer write to end, and is its own transaction."""
    import threading

    run_id = _queued_run(store)
    inside, done = threading.Event(), threading.Event()
    order: list[str] = []

    def other_thread() -> None:
        inside.wait(10)
        with store.db.write():
            order.append("other")
        done.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    with pytest.raises(RuntimeError), store.db.write():
        store.runs.claim_next(1, "agent-a", 30)
        inside.set()
        assert not done.wait(0.3)  # it waits for this write
        order.append("outer")
        raise RuntimeError("undo")
    thread.join(10)
    assert order == ["outer", "other"] and done.is_set()
    assert store.runs.state(run_id) == "queued"  # undone, not committed by the other thread


# -- reads kept from one write to the next (issue 17) ----------------------------------------
def _statements(store: Store) -> list[str]:
    """Every statement ``store``'s connection runs from now on (SQLite's own trace)."""
    seen: list[str] = []
    store.db.conn.set_trace_callback(seen.append)
    return seen


def test_a_kept_read_is_read_again_once_another_connection_commits(
    store: Store, home: Path
) -> None:
    """The agent keeps the roles it checks for every run from one write to the next. Who
    could get around that: a labmate removed from the team by an admin in another process
    while the agent runs. The agent's next write reads the role again and finds none."""
    store.teams.create("vision", "alice")
    store.teams.add("vision", "bob", "member")
    other = Store(home)  # the admin's own process
    seen = _statements(store)
    with store.db.write():
        assert store.teams.role("vision", "bob") == "member"
    with store.db.write():
        assert store.teams.role("vision", "bob") == "member"
    assert sum("FROM members" in s for s in seen) == 1  # the second write kept the read
    other.teams.remove("vision", "bob")
    with store.db.write():
        assert store.teams.role("vision", "bob") is None
    assert sum("FROM members" in s for s in seen) == 2
    other.teams.add("vision", "bob", "admin")
    with store.db.write():
        assert store.teams.role("vision", "bob") == "admin"


def test_a_kept_read_is_forgotten_when_this_connection_writes_its_tables(store: Store) -> None:
    """A write of this connection to any kept table (here, through raw SQL, not the table's
    own methods) forgets every kept read; so does a write that is undone."""
    store.teams.create("vision", "alice")
    store.teams.add("vision", "bob", "member")
    with store.db.write():
        assert store.teams.role("vision", "bob") == "member"
        store.db.execute("UPDATE members SET role = 'admin' WHERE user = 'bob'")
        assert store.teams.role("vision", "bob") == "admin"
    with store.db.write():
        assert store.teams.role("vision", "bob") == "admin"
    with pytest.raises(RuntimeError, match="undo"), store.db.write():
        store.db.execute("DELETE FROM members WHERE user = 'bob'")
        assert store.teams.role("vision", "bob") is None  # read after the delete, inside
        raise RuntimeError("undo")
    with store.db.write():
        assert store.teams.role("vision", "bob") == "admin"  # the delete never happened
    with store.db.write():  # a savepoint undone alone forgets too
        with pytest.raises(RuntimeError), store.db.write():
            store.db.execute("DELETE FROM members WHERE user = 'bob'")
            assert store.teams.role("vision", "bob") is None
            raise RuntimeError("undo the inner one")
        assert store.teams.role("vision", "bob") == "admin"


def test_a_kept_read_is_a_copy_and_outside_a_write_is_not_kept(store: Store) -> None:
    """Each caller gets its own row (one may change its copy); outside a write every read
    goes to the file."""
    seen = _statements(store)
    with store.db.write():
        first = store.queues.by_id(1)
        assert first is not None
        first["name"] = "changed by a caller"
        second = store.queues.by_id(1)
        assert second is not None and second["name"] == "default"
    assert store.queues.by_id(1) is not None and store.queues.by_id(1) is not None
    assert sum("FROM queues" in s for s in seen) == 3


def test_nothing_but_a_statement_naming_them_writes_the_kept_tables(store: Store) -> None:
    """``Database.execute`` forgets kept reads when a statement names a kept table. A
    trigger or a foreign-key action would write one without naming it: none may."""
    from launchctl.store.db import KEPT_TABLES

    kept = set(KEPT_TABLES)
    for row in store.db.all("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"):
        body = " ".join(str(row["sql"]).split()).lower()
        for table in kept:
            for verb in (f"insert into {table} ", f"insert or ignore into {table} ",
                         f"insert or replace into {table} ", f"update {table} ",
                         f"delete from {table} ", f"replace into {table} "):  # fmt: skip
                assert verb not in body, f"trigger {row['name']} writes {table}"
    tables = store.db.all("SELECT name FROM sqlite_master WHERE type = 'table'")
    for table in (str(r["name"]) for r in tables):
        if table in kept:
            for fk in store.db.all(f"PRAGMA foreign_key_list({table})"):
                acts = {fk["on_delete"], fk["on_update"]} - {"NO ACTION", "RESTRICT"}
                assert not acts or fk["table"] in kept, (
                    f"{table} changes when {fk['table']} does ({acts})"
                )


def test_a_watched_read_is_made_again_once_something_could_change_its_answer(
    store: Store, home: Path
) -> None:
    """Issue 17: an agent asks three things every pass (the sweeps needing a scheduler,
    the cancels asked of its runs, its queues' runs waiting for others) and gives the last
    answer again while nothing that could change it was written. Who could get around
    that: a user cancelling a run from another shell (another connection commits: read
    again), and the agent's own sweep scheduler asking for a cancel through this very
    connection (its statement names ``cancel_requested``: read again)."""
    run_id = _queued_run(store)
    store.db.execute("UPDATE runs SET state = 'running', agent_id = 'a1' WHERE id = ?", [run_id])
    seen = _statements(store)

    def reads() -> int:
        return sum("cancel_requested = 1" in s and s.startswith("SELECT") for s in seen)

    assert store.runs.cancels_held_by("a1") == []
    assert store.runs.cancels_held_by("a1") == []
    assert reads() == 1  # the second answer was the first one, kept
    store.db.execute("UPDATE runs SET name = 'renamed' WHERE id = ?", [run_id])
    assert store.runs.cancels_held_by("a1") == [] and reads() == 1  # names none of its words

    other = Store(home)  # `launchctl runs cancel` in another shell
    other.db.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?", [run_id])
    assert store.runs.cancels_held_by("a1") == [run_id] and reads() == 2
    assert store.runs.cancels_held_by("a1") == [run_id] and reads() == 2

    store.db.execute("UPDATE runs SET cancel_requested = 0 WHERE id = ?", [run_id])  # its own
    assert store.runs.cancels_held_by("a1") == [] and reads() == 3

    with store.db.write():  # inside a write it is a plain read: what it sees may be undone
        store.db.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?", [run_id])
        assert store.runs.cancels_held_by("a1") == [run_id]
    assert reads() == 4


def test_a_watched_read_is_not_kept_past_an_undone_write_or_a_delete(store: Store) -> None:
    """A write undone after a read inside it: the next read outside reads again (the
    counted write names the word). A delete counts as naming every watched word: its
    foreign-key actions write tables it does not name."""
    run_id = _queued_run(store)
    store.db.execute("UPDATE runs SET state = 'running', agent_id = 'a1' WHERE id = ?", [run_id])
    assert store.runs.cancels_held_by("a1") == []
    with pytest.raises(RuntimeError, match="undo"), store.db.write():
        store.db.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?", [run_id])
        assert store.runs.cancels_held_by("a1") == [run_id]
        raise RuntimeError("undo")
    assert store.runs.cancels_held_by("a1") == []
    seen = _statements(store)
    store.db.execute("DELETE FROM events WHERE run_id = 'nothing'")
    assert store.runs.cancels_held_by("a1") == []
    assert sum(s.startswith("SELECT id FROM runs") for s in seen) == 1


def test_one_pass_reads_data_version_once(store: Store, home: Path) -> None:
    """In an agent's pass the watched reads share one read of ``PRAGMA data_version``; a
    commit made during the pass is seen by the next one."""
    run_id = _queued_run(store)
    store.db.execute("UPDATE runs SET state = 'running', agent_id = 'a1' WHERE id = ?", [run_id])
    seen = _statements(store)
    with store.db.one_pass():
        assert store.runs.cancels_held_by("a1") == []
        Store(home).db.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?", [run_id])
        assert store.runs.cancels_held_by("a1") == []  # this pass: the version it read
    assert sum("data_version" in s for s in seen) == 1
    with store.db.one_pass():
        assert store.runs.cancels_held_by("a1") == [run_id]  # the next pass sees it


def test_no_trigger_writes_what_a_watched_read_reads(store: Store) -> None:
    """``Database.all_watched`` counts the writes whose text names a watched word. A
    trigger fired by a statement that names none would get around that: no trigger's
    body may name one."""
    from launchctl.store.db import WATCHED

    for row in store.db.all("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"):
        body = " ".join(str(row["sql"]).split()).lower()
        action = body[body.find(" begin ") :]
        for word in WATCHED:
            assert word not in action, f"trigger {row['name']} writes {word}"
