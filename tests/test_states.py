"""Run states have one owner: the named sets, the allowed moves, and the store's one
guarded transition that every state change (moves, claims, cancels, queue deletion) uses."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from launchctl.errors import StateConflict
from launchctl.history import attempts
from launchctl.states import (
    ACTIVE,
    ALLOWED,
    ATTEMPT_ENDS,
    TERMINAL,
    EventKind,
    State,
    check_move,
    ordered,
)
from launchctl.store import Store
from launchctl.store.migrations import free_gpus_trigger
from launchctl.store.runs import HELD, sql_states, transition


def _run(store: Store, *, queue_id: int | None = 1) -> str:
    from launchctl.launch import new_run_id

    run_id = new_run_id()
    store.runs.insert(
        {
            "id": run_id, "queue_id": queue_id, "queue_name": "default" if queue_id else None,
            "job_version_id": None, "name": "r", "project": "p", "entity": "e",
            "resource": "local-process", "spec": {}, "priority": 2,
        }
    )  # fmt: skip
    return run_id


# -- the vocabulary, without a store ----------------------------------------------------


def test_the_named_sets_split_every_state_once() -> None:
    waiting_or_paused = {State.QUEUED, State.PREEMPTED}
    assert ACTIVE | TERMINAL | waiting_or_paused == set(State)
    assert not ACTIVE & TERMINAL and not ACTIVE & waiting_or_paused
    assert set(ATTEMPT_ENDS) == TERMINAL | waiting_or_paused


def test_every_active_state_can_be_left_and_no_terminal_one() -> None:
    for state in ACTIVE:
        assert ALLOWED[state] and State.STOPPED in ALLOWED[state]
    for state in TERMINAL:
        assert ALLOWED[state] == frozenset()


def test_check_move_refuses_a_move_the_table_does_not_list() -> None:
    check_move([State.QUEUED], State.CLAIMED)
    check_move(ACTIVE, State.STOPPED)
    with pytest.raises(ValueError, match="not a legal move"):
        check_move([State.QUEUED, State.FINISHED], State.CLAIMED)
    with pytest.raises(ValueError, match="at least one state"):
        check_move([], State.CLAIMED)
    with pytest.raises(ValueError):
        check_move([State.QUEUED], "paused")


def test_sql_lists_are_built_from_the_sets_in_declared_order() -> None:
    assert HELD == "('claimed', 'building', 'starting', 'running')"
    assert sql_states(reversed(ordered(ACTIVE))) == HELD
    with pytest.raises(ValueError):
        sql_states(["queued', 'x"])  # only state names reach SQL


def test_the_state_vocabulary_imports_no_store() -> None:
    """The store imports launchctl.states; states must not import the store back."""
    code = (
        "import sys, launchctl.states, launchctl.history\n"
        "bad = sorted(m for m in sys.modules if m.startswith('launchctl.store'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_history_reads_a_takeover_from_its_kind_not_its_text() -> None:
    def ev(at: float, frm: str | None, to: str, agent: str | None, msg: str | None = None,
           kind: str | None = None) -> dict[str, object]:  # fmt: skip
        return {"at": at, "from_state": frm, "to_state": to, "agent_id": agent,
                "message": msg, "kind": kind}  # fmt: skip

    events = [
        ev(1, None, "queued", None, "launched"),
        ev(2, "queued", "claimed", "a1"),
        ev(3, "claimed", "running", "a1"),
        ev(4, "running", "running", "a2", "taken over from a1: lease expired", "takeover"),
        ev(5, "running", "running", "a3", "taken over? no, a warning that says so"),
        ev(6, "running", "preempted", "a2", "spot reclaimed"),
        ev(7, "preempted", "queued", "a2"),
        ev(8, "queued", "claimed", "a4"),
        ev(9, "claimed", "failed", "a4", "build failed"),
    ]
    tries = attempts(events)
    assert [(t["agent"], t["outcome"], t["message"]) for t in tries] == [
        ("a2", "preempted", "spot reclaimed"),
        ("a4", "failed", "build failed"),
    ]
    assert tries[0]["started_at"] == 3 and tries[0]["ended_at"] == 6


# -- the one transition, in a real store ------------------------------------------------


def test_a_state_change_outside_a_write_transaction_is_refused(store: Store) -> None:
    run_id = _run(store)
    with pytest.raises(RuntimeError, match=r"inside db\.write"):
        transition(store.db, run_id, [State.QUEUED], State.STOPPED)
    assert store.runs.state(run_id) == "queued"


def test_an_illegal_move_writes_nothing(store: Store) -> None:
    run_id = _run(store)
    before = store.runs.events(run_id)
    with pytest.raises(ValueError, match="not a legal move"):
        store.runs.move(run_id, [State.QUEUED], State.RUNNING)
    with pytest.raises(ValueError, match="not a legal move"), store.db.write():
        transition(store.db, run_id, [State.QUEUED], State.FINISHED)
    assert store.runs.state(run_id) == "queued"
    assert store.runs.events(run_id) == before


def _to_starting(store: Store, run_id: str) -> None:
    assert store.runs.claim(run_id, "a1", 30) is not None
    store.runs.move(run_id, [State.CLAIMED], State.STARTING, agent_id="a1")


def _moves(store: Store, run_id: str) -> list[tuple[str | None, str, str | None]]:
    return [(e["from_state"], e["to_state"], e["message"]) for e in store.runs.events(run_id)]


def test_a_move_through_a_state_is_two_checked_moves_in_one_update(store: Store) -> None:
    """Issue 17: a run that ended before its start was recorded gets both in one UPDATE,
    and still one event per move, in order, each with its own text."""
    run_id = _run(store)
    _to_starting(store, run_id)
    old = store.runs.move(
        run_id, [State.STARTING], State.FINISHED, agent_id="a1",
        via=(State.RUNNING, {"pid": 4242, "started_at": 1.5, "message": "pid 4242"}),
        exit_code=0,
    )  # fmt: skip
    assert old == "starting"
    run = store.runs.get(run_id)
    assert (run["state"], run["pid"], run["started_at"], run["exit_code"]) == (
        "finished",
        4242,
        1.5,
        0,
    )
    assert run["ended_at"] is not None
    assert _moves(store, run_id)[-2:] == [
        ("starting", "running", "pid 4242"),
        ("running", "finished", None),
    ]
    tries = attempts(store.runs.events(run_id))
    assert tries[-1]["started_at"] is not None and tries[-1]["outcome"] == "finished"


def test_a_move_through_a_state_checks_both_legs_and_its_guard(store: Store) -> None:
    run_id = _run(store)
    before = _moves(store, run_id)
    # queued -> running is not a move, so queued through running to finished is refused
    with pytest.raises(ValueError, match="not a legal move"):
        store.runs.move(run_id, [State.QUEUED], State.FINISHED, via=(State.RUNNING, {}))
    # claimed -> starting is legal, but starting -> queued... through a state that cannot
    # be left that way is refused too (finished is terminal)
    with pytest.raises(ValueError, match="not a legal move"):
        store.runs.move(run_id, [State.QUEUED], State.STOPPED, via=(State.FINISHED, {}))
    with pytest.raises(ValueError, match="cannot set"):
        store.runs.move(run_id, [State.QUEUED], State.CLAIMED,
                        via=(State.CLAIMED, {"spec": "{}"}))  # fmt: skip
    # a guard that does not hold (the run is queued, not starting) writes nothing
    with pytest.raises(StateConflict):
        store.runs.move(run_id, [State.STARTING], State.FINISHED, agent_id="a1",
                        via=(State.RUNNING, {"pid": 1}), exit_code=0)  # fmt: skip
    assert store.runs.state(run_id) == "queued" and _moves(store, run_id) == before


def test_record_exit_records_a_start_not_yet_recorded_with_the_end(store: Store) -> None:
    """A plain finish goes through running in one update; any other end (a failure, a
    stop) gets its move to running first, then the end as before: the same events."""
    from launchctl.agent.outcome import record_exit
    from launchctl.runners import Exit

    ran = {"pid": 7, "pid_started": "9", "started_at": 2.0, "message": "pid 7"}
    plain, failed, stopped = _run(store), _run(store), _run(store)
    for run_id in (plain, failed, stopped):
        _to_starting(store, run_id)
    with store.db.write():
        record_exit(store, store.runs.get(plain), Exit(0), None, "a1", running=dict(ran))
        record_exit(store, store.runs.get(failed), Exit(3), None, "a1", running=dict(ran))
        record_exit(store, store.runs.get(stopped), Exit(143), "cancelled", "a1",
                    running=dict(ran))  # fmt: skip
    assert _moves(store, plain)[-2:] == [
        ("starting", "running", "pid 7"),
        ("running", "finished", None),
    ]
    assert _moves(store, failed)[-2:] == [
        ("starting", "running", "pid 7"),
        ("running", "failed", "exit code 3"),
    ]
    assert _moves(store, stopped)[-2:] == [
        ("starting", "running", "pid 7"),
        ("running", "stopped", "cancelled"),
    ]
    for run_id in (plain, failed, stopped):
        assert store.runs.get(run_id)["pid"] == 7


def test_claims_cancels_and_queue_deletion_are_guarded_moves_with_events(store: Store) -> None:
    launched = store.runs.insert(
        {"id": "direct01", "queue_id": None, "queue_name": None, "job_version_id": None,
         "name": "d", "project": "p", "entity": "e", "resource": "local-process",
         "spec": {}, "priority": 2},
        claim_for="agent-x", lease_s=30,
    )  # fmt: skip
    assert launched["state"] == "claimed" and launched["agent_id"] == "agent-x"
    cancelled = _run(store)
    assert store.runs.request_cancel(cancelled, by="alice") == "stopped"
    with pytest.raises(StateConflict):
        store.runs.request_cancel(cancelled)
    store.queues.create("q2", resource="local-process", entity="e", config={}, description=None)
    q2 = store.queues.get("q2")["id"]
    orphan = _run(store, queue_id=q2)
    store.queues.delete("q2", force=True)

    moves = [
        (e["run_id"], e["from_state"], e["to_state"], e["agent_id"], e["message"], e["kind"])
        for e in store.runs.events()
        if e["from_state"] != e["to_state"]
    ]
    assert moves == [
        ("direct01", None, "queued", None, "launched", None),
        ("direct01", "queued", "claimed", "agent-x", "claimed by launch", None),
        (cancelled, None, "queued", None, "launched", None),
        (cancelled, "queued", "stopped", None, "cancelled by alice", None),
        (orphan, None, "queued", None, "launched", None),
        (orphan, "queued", "stopped", None, "queue 'q2' deleted", None),
    ]
    for run_id, reason in ((cancelled, "cancelled"), (orphan, "queue deleted")):
        run = store.runs.get(run_id)
        assert run["reason"] == reason and run["ended_at"] is not None


def test_a_takeover_is_an_event_of_kind_takeover(store: Store) -> None:
    import time

    run_id = _run(store)
    assert store.runs.claim_next(1, "agent-a", -1.0) is not None  # its lease already ran out
    taken = store.runs.take_over(run_id, "agent-b", 30)
    assert taken is not None and taken["agent_id"] == "agent-b"
    notes = [e for e in store.runs.events(run_id) if e["from_state"] == e["to_state"]]
    assert [(n["agent_id"], n["kind"]) for n in notes] == [("agent-b", EventKind.TAKEOVER)]
    assert notes[0]["message"].startswith("taken over from agent agent-a")
    assert time.time() < store.runs.get(run_id)["lease_expires_at"]


def test_the_trigger_in_a_new_store_is_the_one_built_from_the_sets(store: Store) -> None:
    """If ACTIVE changes, this fails until a new migration re-creates the trigger."""
    row = store.db.one("SELECT sql FROM sqlite_master WHERE name = 'runs_free_gpus'")
    assert row is not None and row["sql"] == free_gpus_trigger()


def test_upgrading_marks_old_takeovers_and_rebuilds_the_trigger(home: Path) -> None:
    from sqlite_utils import Database

    from launchctl.store.migrations import migrations

    home.mkdir()
    old = Database(home / "launchctl.db")
    migrations.apply(old, stop_before="m007_run_states")
    old.execute(
        "INSERT INTO runs (id, queue_id, queue_name, name, project, entity, resource, spec,"
        " state, created_at, updated_at) VALUES ('r1', 1, 'default', 'r', 'p', 'e',"
        " 'local-process', '{}', 'running', 1, 1)"
    )
    for frm, to, msg in (
        ("claimed", "running", "taken over by nobody: a move, not a note"),
        ("running", "running", "taken over from agent a1: its lease expired"),
        ("running", "running", "lease of agent a1 expired: its process 7 is gone"),
    ):
        old.execute(
            "INSERT INTO events (run_id, at, from_state, to_state, agent_id, message)"
            " VALUES ('r1', 2, ?, ?, 'a2', ?)",
            [frm, to, msg],
        )
    old.conn.commit()
    old.close()

    store = Store(home)
    try:
        kinds = [e["kind"] for e in store.runs.events("r1")]
        assert kinds == [None, "takeover", None]
        row = store.db.one("SELECT sql FROM sqlite_master WHERE name = 'runs_free_gpus'")
        assert row is not None and row["sql"] == free_gpus_trigger()
    finally:
        store.close()
    conn = sqlite3.connect(home / "launchctl.db")
    try:
        applied = [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations")]
        assert applied.count("m007_run_states") == 1
    finally:
        conn.close()
