"""In-process tests of launchctl.store.runs (issue 19's `nox -s mutate`): claims, leases,
guarded moves, takeovers and cancels on a real store, called directly.

The agent tests drive these through a subprocess, where a mutant is never imported.
What they hold: a run is claimed once, in claim order, with a lease of the length asked;
a move checks its holder; only an expired lease can be taken over; a run back in the
queue is held by nobody and waits from the end; a cancel stops a queued run at once and
flags an active one.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from launchctl.errors import NotFound, StateConflict
from launchctl.states import EventKind, State
from launchctl.store import Store
from launchctl.store.runs import WAIT_PREFIX, transition


def add(store: Store, run_id: str, *, queue_id: int | None = 1, priority: int = 2,
        claim_for: str | None = None, lease_s: float = 0.0, **extra: Any) -> str:  # fmt: skip
    row = {
        "id": run_id, "queue_id": queue_id, "queue_name": "default" if queue_id else None,
        "job_version_id": None, "name": f"n-{run_id}", "project": "p", "entity": "e",
        "resource": "local-process", "spec": {"k": run_id}, "priority": priority, **extra,
    }  # fmt: skip
    store.runs.insert(row, claim_for=claim_for, lease_s=lease_s)
    return run_id


def events(store: Store, run_id: str) -> list[tuple[Any, ...]]:
    return [(e["from_state"], e["to_state"], e["agent_id"], e["message"], e["kind"])
            for e in store.runs.events(run_id)]  # fmt: skip


def set_row(store: Store, run_id: str, **fields: Any) -> None:
    sets = ", ".join(f"{k} = ?" for k in fields)
    store.db.execute(f"UPDATE runs SET {sets} WHERE id = ?", [*fields.values(), run_id])


def make_queue(store: Store, name: str) -> int:
    store.queues.create(name, resource="local-process", entity="e", config={}, description=None)
    return int(store.queues.get(name)["id"])


# --- creating and reading ---------------------------------------------------------------


def test_a_new_run_is_queued_now_with_its_spec_and_one_event(store: Store) -> None:
    before = time.time()
    add(store, "r1")
    run = store.runs.get("r1")
    assert (run["state"], run["spec"], run["cancel_requested"]) == ("queued", {"k": "r1"}, False)
    assert before <= run["created_at"] == run["updated_at"] == run["enqueued_at"] <= time.time()
    assert run["agent_id"] is None and run["lease_expires_at"] is None
    assert events(store, "r1") == [(None, "queued", None, "launched", None)]


def test_a_direct_launch_is_claimed_in_the_same_transaction(store: Store) -> None:
    before = time.time()
    add(store, "d1", queue_id=None, claim_for="agent-x", lease_s=40)
    run = store.runs.get("d1")
    assert (run["state"], run["agent_id"]) == ("claimed", "agent-x")
    assert before + 40 <= run["lease_expires_at"] <= time.time() + 40
    assert events(store, "d1")[1] == ("queued", "claimed", "agent-x", "claimed by launch", None)


def test_a_run_is_found_by_a_unique_prefix_only(store: Store) -> None:
    add(store, "abc1")
    assert store.runs.get("ab")["id"] == "abc1" and store.runs.get("abc1")["id"] == "abc1"
    with pytest.raises(NotFound, match=r"^run '' does not exist \(see `launchctl runs list`\)$"):
        store.runs.get("")
    add(store, "abc2")
    ambiguous = r"^run id 'ab' is ambiguous \(abc1, abc2\): give more of it$"
    with pytest.raises(NotFound, match=ambiguous):
        store.runs.get("ab")
    assert store.runs.find("ab") is None and store.runs.find("abc2") is not None
    with pytest.raises(NotFound, match=r"^run 'zz' does not exist$"):
        store.runs.state("zz")
    assert store.runs.state("abc2") == "queued"


def test_cancels_held_by_lists_only_the_cancelled_runs_an_agent_holds(store: Store) -> None:
    for name in ("a", "b", "c", "d"):
        add(store, name, claim_for="agent-1", lease_s=30)
    add(store, "other", claim_for="agent-2", lease_s=30)
    for name in ("a", "c", "other"):
        store.runs.request_cancel(name)
    store.runs.move("c", [State.CLAIMED], State.FAILED, agent_id="agent-1", reason="x")
    assert store.runs.cancels_held_by("agent-1") == ["a"]
    assert store.runs.cancels_held_by("agent-2") == ["other"]
    assert store.runs.cancels_held_by("agent-3") == []


def test_a_move_from_one_state_says_why_it_did_not_take(store: Store) -> None:
    """A move with one state to leave reads the run only when it fails (issue 17)."""
    add(store, "a", claim_for="agent-1", lease_s=30)
    with pytest.raises(StateConflict, match=r"^run a is claimed; it cannot become running$"):
        store.runs.move("a", [State.STARTING], State.RUNNING, agent_id="agent-1")
    with pytest.raises(StateConflict, match=r"^run a is claimed; it cannot become starting$"):
        store.runs.move("a", [State.CLAIMED], State.STARTING, agent_id="agent-2")
    with pytest.raises(NotFound, match=r"^run 'zz' does not exist$"):
        store.runs.move("zz", [State.CLAIMED], State.STARTING, agent_id="agent-1")
    assert store.runs.move("a", [State.CLAIMED], State.STARTING, agent_id="agent-1") == "claimed"
    events = store.runs.events("a")
    assert [(e["from_state"], e["to_state"]) for e in events][-1] == ("claimed", "starting")
    assert store.runs.state("a") == "starting"


# --- claiming ------------------------------------------------------------------------------


def test_claim_order_is_priority_then_time_queued_and_each_run_is_claimed_once(
    store: Store,
) -> None:
    add(store, "low", priority=3)
    add(store, "first")
    add(store, "urgent", priority=0)
    add(store, "second")
    add(store, "later", not_before=time.time() + 3600)  # a retry that waits out its backoff
    before = time.time()
    got = [store.runs.claim_next(1, f"agent-{i}", 25) for i in range(5)]
    assert [r["id"] if r else None for r in got] == ["urgent", "first", "second", "low", None]
    first = got[0]
    assert first is not None and (first["state"], first["agent_id"]) == ("claimed", "agent-0")
    assert before + 25 <= first["lease_expires_at"] <= time.time() + 25
    assert events(store, "urgent")[1] == ("queued", "claimed", "agent-0", None, None)
    assert store.runs.state("later") == "queued"


def test_a_requeued_run_waits_again_from_the_end(store: Store) -> None:
    add(store, "a", claim_for="agent-1", lease_s=30)
    add(store, "b")
    store.runs.move("a", [State.CLAIMED], State.QUEUED, agent_id="agent-1")
    got = store.runs.claim_next(1, "agent-2", 30)
    assert got is not None and got["id"] == "b"


def test_a_paused_or_other_queue_gives_nothing(store: Store) -> None:
    other = make_queue(store, "q2")
    add(store, "r1")
    assert store.runs.claim_next(other, "agent-1", 30) is None
    store.queues.update("default", paused=1)
    assert store.runs.claim_next(1, "agent-1", 30) is None
    assert store.runs.claim_first(1, "agent-1", 30, lambda q, rows: rows[0]["id"]) is None
    assert store.runs.state("r1") == "queued"


def test_claim_first_claims_what_choose_picks_from_the_waiting_runs(store: Store) -> None:
    store.queues.update("default", config={"gpu_sharing": 2})
    seen: list[Any] = []

    def choose(queue: dict[str, Any], rows: list[dict[str, Any]]) -> str | None:
        seen.append((queue["config"], [(r["id"], r["resource"]) for r in rows]))
        return str(rows[-1]["id"])

    for name in ("a", "b", "c"):
        add(store, name)
    got = store.runs.claim_first(1, "agent-1", 30, choose, scan=2)
    assert got is not None and (got["id"], got["agent_id"]) == ("b", "agent-1")
    assert seen == [({"gpu_sharing": 2}, [("a", "local-process"), ("b", "local-process")])]
    assert store.runs.claim_first(1, "agent-1", 30, lambda q, rows: None) is None
    assert store.runs.state("a") == "queued"
    store.runs.request_cancel("a")
    store.runs.request_cancel("c")
    called: list[int] = []
    assert store.runs.claim_first(1, "agent-1", 30, lambda q, r: called.append(1)) is None
    assert called == []  # nothing waits: choose is not asked


def test_claim_takes_one_named_waiting_run_once(store: Store) -> None:
    add(store, "r1")
    before = time.time()
    got = store.runs.claim("r1", "agent-1", 15)
    assert got is not None and got["agent_id"] == "agent-1"
    assert before + 15 <= got["lease_expires_at"] <= time.time() + 15
    assert store.runs.claim("r1", "agent-2", 15) is None
    assert store.runs.get("r1")["agent_id"] == "agent-1"


def test_why_a_run_waits_is_noted_once_and_cleared_by_its_claim(store: Store) -> None:
    add(store, "r1")
    why = WAIT_PREFIX + "needs 2 GPUs"
    assert store.runs.note_waiting("r1", why) is True
    assert store.runs.note_waiting("r1", why) is False  # said already
    assert store.runs.get("r1")["reason"] == why
    assert events(store, "r1")[1:] == [("queued", "queued", None, why, None)]
    assert store.runs.note_waiting("nope", why) is False
    store.runs.claim_next(1, "agent-1", 30)
    assert store.runs.get("r1")["reason"] is None
    assert store.runs.note_waiting("r1", why) is False  # no longer waiting
    # Any other reason stays through a claim.
    add(store, "r2")
    set_row(store, "r2", reason="kept")
    store.runs.claim_next(1, "agent-1", 30)
    assert store.runs.get("r2")["reason"] == "kept"


def test_has_queued_and_next_retry_at(store: Store) -> None:
    other = make_queue(store, "q2")
    assert store.runs.has_queued([1]) is False and store.runs.has_queued([]) is False
    add(store, "r1")
    assert store.runs.has_queued([1]) is True and store.runs.has_queued([other]) is False
    assert store.runs.has_queued([other, 1]) is True
    assert store.runs.has_queued([1], besides=["r1"]) is False
    add(store, "r2")
    assert store.runs.has_queued([1], besides=["r1"]) is True
    assert store.runs.next_retry_at([1]) is None and store.runs.next_retry_at([]) is None
    soon, later = time.time() + 100, time.time() + 200
    set_row(store, "r1", not_before=later)
    set_row(store, "r2", not_before=soon)
    assert store.runs.has_queued([1]) is False  # both wait out a backoff
    assert store.runs.next_retry_at([1]) == soon and store.runs.next_retry_at([other]) is None
    set_row(store, "r2", not_before=time.time() - 1)  # its backoff is over
    assert store.runs.has_queued([1]) is True and store.runs.next_retry_at([1]) == later
    store.queues.update("default", paused=1)
    assert store.runs.has_queued([1]) is False and store.runs.next_retry_at([1]) is None


# --- leases and takeovers --------------------------------------------------------------------


def test_renewing_leases_covers_only_the_agents_held_runs(store: Store) -> None:
    for name in ("a", "b", "done"):
        add(store, name, claim_for="agent-1", lease_s=1)
    add(store, "other", claim_for="agent-2", lease_s=1)
    store.runs.move("done", [State.CLAIMED], State.FAILED, agent_id="agent-1", reason="x")
    before = time.time()
    assert store.runs.renew_leases("agent-1", 60) == 2
    for name in ("a", "b"):
        assert before + 60 <= store.runs.get(name)["lease_expires_at"] <= time.time() + 60
    assert store.runs.get("other")["lease_expires_at"] < before + 60
    assert store.runs.get("done")["lease_expires_at"] < before + 60


def test_only_an_expired_lease_is_taken_over(store: Store) -> None:
    add(store, "r1", claim_for="agent-1", lease_s=60)
    assert store.runs.take_over("r1", "agent-2", 30) is None  # its lease runs
    set_row(store, "r1", lease_expires_at=time.time() - 1)
    before = time.time()
    taken = store.runs.take_over("r1", "agent-2", 30)
    assert taken is not None and taken["agent_id"] == "agent-2"
    assert taken["state"] == "claimed"
    assert before + 30 <= taken["lease_expires_at"] <= time.time() + 30
    assert events(store, "r1")[-1] == (
        "claimed", "claimed", "agent-2", "taken over from agent agent-1: its lease expired",
        EventKind.TAKEOVER,
    )  # fmt: skip
    assert store.runs.take_over("r1", "agent-3", 30) is None  # agent-2's lease runs now
    store.runs.move("r1", [State.CLAIMED], State.FAILED, agent_id="agent-2", reason="x")
    set_row(store, "r1", lease_expires_at=time.time() - 1)
    assert store.runs.take_over("r1", "agent-3", 30) is None  # not held: nothing to take


def test_expired_lists_held_runs_of_this_host_past_their_lease(store: Store) -> None:
    other = make_queue(store, "q2")
    store.agents.register("agent-1", host="h1", pid=1, queues=["default"], max_jobs=1)
    store.agents.register("agent-9", host="h9", pid=1, queues=["default"], max_jobs=1)
    past = time.time() - 1
    add(store, "mine", claim_for="agent-1", lease_s=30)
    add(store, "direct", queue_id=None, claim_for="agent-1", lease_s=30)
    add(store, "q2run", queue_id=other, claim_for="agent-1", lease_s=30)
    add(store, "running", claim_for="agent-1", lease_s=30)
    add(store, "elsewhere", claim_for="agent-9", lease_s=30)
    add(store, "ended", claim_for="agent-1", lease_s=30)
    store.runs.move("ended", [State.CLAIMED], State.FAILED, agent_id="agent-1", reason="x")
    for name in ("mine", "direct", "q2run", "elsewhere", "ended"):
        set_row(store, name, lease_expires_at=past)
    assert [r["id"] for r in store.runs.expired("h1", queue_ids=[1])] == ["mine", "direct"]
    assert [r["id"] for r in store.runs.expired("h1")] == ["direct"]
    assert [r["id"] for r in store.runs.expired("h1", queue_ids=[other, 1])] == [
        "mine", "direct", "q2run"]  # fmt: skip
    assert [r["id"] for r in store.runs.expired("h9", queue_ids=[1])] == ["elsewhere"]
    assert store.runs.expired("h1", queue_ids=[1])[0]["spec"] == {"k": "mine"}


def test_a_dead_agents_leases_end_at_once_and_it_is_marked_stopped(store: Store) -> None:
    store.agents.register("agent-1", host="h1", pid=1, queues=["default"], max_jobs=1)
    add(store, "a", claim_for="agent-1", lease_s=600)
    add(store, "b", claim_for="agent-1", lease_s=600)
    add(store, "other", claim_for="agent-2", lease_s=600)
    assert store.runs.expire_leases_of("agent-1", "its process is gone") == 2
    now = time.time()
    assert store.runs.get("a")["lease_expires_at"] < now
    assert store.runs.get("other")["lease_expires_at"] > now
    assert events(store, "a")[-1] == ("claimed", "claimed", "agent-1",
                                      "lease of agent agent-1 expired: its process is gone",
                                      None)  # fmt: skip
    agent = store.db.one("SELECT stopped_at FROM agents WHERE id = 'agent-1'")
    assert agent is not None and agent["stopped_at"] is not None
    assert store.runs.take_over("a", "agent-2", 30) is not None  # at once


# --- moving -----------------------------------------------------------------------------------


def test_a_move_checks_its_holder_and_returns_the_old_state(store: Store) -> None:
    add(store, "r1", claim_for="agent-1", lease_s=30)
    with pytest.raises(StateConflict, match=r"^run r1 is claimed; it cannot become starting$"):
        store.runs.move("r1", [State.CLAIMED], State.STARTING, agent_id="agent-2")
    assert store.runs.state("r1") == "claimed"
    old = store.runs.move("r1", [State.CLAIMED], State.STARTING, agent_id="agent-1", pid=42)
    assert old == "claimed" and store.runs.get("r1")["pid"] == 42
    assert events(store, "r1")[-1] == ("claimed", "starting", "agent-1", None, None)
    with pytest.raises(StateConflict, match="is starting; it cannot become building"):
        store.runs.move("r1", [State.CLAIMED], State.BUILDING)  # not from the listed state
    # Held by nobody (a cancelled queued run, a reset): anyone may move it.
    add(store, "r2")
    assert store.runs.move("r2", [State.QUEUED], State.STOPPED, agent_id="agent-9") == "queued"


def test_a_move_or_update_refuses_unknown_fields_and_writes_nothing(store: Store) -> None:
    add(store, "r1", claim_for="agent-1", lease_s=30)
    for call in (
        lambda: store.runs.move("r1", [State.CLAIMED], State.STARTING, state="finished"),
        lambda: store.runs.update("r1", devices="[0]"),
        lambda: store.runs.update("r1", state="finished"),
    ):
        with pytest.raises(ValueError, match=r"^cannot set \[.*\] on a run$"):
            call()
    with pytest.raises(ValueError, match=r"^cannot set \['bogus'\] on a run$"), store.db.write():
        transition(store.db, "r1", [State.CLAIMED], State.STARTING, fields={"bogus": 1})
    assert store.runs.state("r1") == "claimed" and len(store.runs.events("r1")) == 2
    with pytest.raises(NotFound, match=r"^run 'nope' does not exist$"), store.db.write():
        transition(store.db, "nope", [State.QUEUED], State.STOPPED)
    before = store.runs.get("r1")["updated_at"]
    store.runs.update("r1", pid=7, workdir="/w")
    run = store.runs.get("r1")
    assert (run["pid"], run["workdir"]) == (7, "/w") and run["updated_at"] >= before


def test_an_end_is_timed_and_its_reason_is_the_events_message(store: Store) -> None:
    add(store, "r1", claim_for="agent-1", lease_s=30)
    before = time.time()
    store.runs.move("r1", [State.CLAIMED], State.FAILED, agent_id="agent-1", reason="boom",
                    stage="agent")  # fmt: skip
    run = store.runs.get("r1")
    assert (run["state"], run["reason"], run["stage"]) == ("failed", "boom", "agent")
    assert before <= run["ended_at"] == run["updated_at"] <= time.time()
    assert events(store, "r1")[-1] == ("claimed", "failed", "agent-1", "boom", None)
    add(store, "r2", claim_for="agent-1", lease_s=30)
    store.runs.move("r2", [State.CLAIMED], State.FAILED, agent_id="agent-1", reason="x",
                    message="said otherwise")  # fmt: skip
    assert events(store, "r2")[-1][3] == "said otherwise"
    add(store, "r3", claim_for="agent-1", lease_s=30)
    store.runs.move("r3", [State.CLAIMED], State.STARTING, agent_id="agent-1")
    assert store.runs.get("r3")["ended_at"] is None


def test_back_in_the_queue_a_run_is_held_by_nobody(store: Store) -> None:
    add(store, "r1", claim_for="agent-1", lease_s=30)
    store.runs.move("r1", [State.CLAIMED], State.STARTING, agent_id="agent-1", pid=5,
                    pid_started="99", started_at=1.0)  # fmt: skip
    queued_at = store.runs.get("r1")["enqueued_at"]
    store.runs.move("r1", [State.STARTING], State.QUEUED, agent_id="agent-1", reason="requeued")
    run = store.runs.get("r1")
    assert run["state"] == "queued" and run["ended_at"] is None
    assert [run[k] for k in ("agent_id", "lease_expires_at", "pid", "pid_started",
                             "started_at")] == [None] * 5  # fmt: skip
    assert run["enqueued_at"] > queued_at
    # A retry's own enqueued_at is kept.
    store.runs.claim("r1", "agent-1", 30)
    store.runs.move("r1", [State.CLAIMED], State.QUEUED, agent_id="agent-1", enqueued_at=7.0)
    assert store.runs.get("r1")["enqueued_at"] == 7.0


def test_a_note_changes_no_state(store: Store) -> None:
    add(store, "r1")
    store.runs.note("r1", "a fact")
    assert events(store, "r1")[-1] == ("queued", "queued", None, "a fact", None)
    with pytest.raises(NotFound, match=r"^run 'nope' does not exist$"):
        store.runs.note("nope", "x")


# --- cancelling -------------------------------------------------------------------------------


def test_a_cancel_stops_a_queued_run_and_flags_an_active_one(store: Store) -> None:
    add(store, "waiting")
    assert store.runs.request_cancel("waiting", by="alice") == "stopped"
    run = store.runs.get("waiting")
    assert (run["state"], run["reason"], run["cancel_requested"]) == ("stopped", "cancelled", False)
    assert events(store, "waiting")[-1] == ("queued", "stopped", None, "cancelled by alice", None)
    add(store, "active", claim_for="agent-1", lease_s=30)
    assert store.runs.request_cancel("active") == "claimed"
    run = store.runs.get("active")
    assert (run["state"], run["cancel_requested"]) == ("claimed", True)
    assert events(store, "active")[-1] == (
        "claimed", "claimed", None, "cancelled; its agent stops it", None)  # fmt: skip
    with pytest.raises(StateConflict, match=r"^run waiting is already stopped$"):
        store.runs.request_cancel("waiting")
    with pytest.raises(NotFound, match=r"^run 'nope' does not exist$"):
        store.runs.request_cancel("nope")


# --- listing ------------------------------------------------------------------------------------


def test_select_filters_and_orders_newest_first(store: Store) -> None:
    other = make_queue(store, "q2")
    add(store, "a")
    add(store, "b", queue_id=other, project="x")
    store.db.execute("UPDATE runs SET queue_name = 'q2' WHERE id = 'b'")
    add(store, "c", claim_for="agent-1", lease_s=30)
    assert [r["id"] for r in store.runs.select()] == ["c", "b", "a"]
    assert [r["id"] for r in store.runs.select(limit=2)] == ["c", "b"]
    assert [r["id"] for r in store.runs.select(queue="q2")] == ["b"]
    assert [r["id"] for r in store.runs.select(states=["queued"], limit=None)] == ["b", "a"]
    from launchctl.store.runs import select_runs

    set_row(store, "a", created_at=100.0)
    set_row(store, "c", created_at=300.0, ended_at=150.0)
    assert [r["id"] for r in select_runs(store.db, project="x")] == ["b"]
    assert [r["id"] for r in select_runs(store.db, since=300.0)] == ["c", "b"]
    assert [r["id"] for r in select_runs(store.db, before=200.0)] == ["c", "a"]
    assert select_runs(store.db, version_id=1) == select_runs(store.db, job_id=1) == []


# --- what the second pass of `nox -s mutate` found ------------------------------------------


def claimed_event(store: Store, run_id: str) -> dict[str, Any]:
    return next(e for e in store.runs.events(run_id) if e["to_state"] == "claimed")


def test_each_claim_is_timed_once_with_its_agent_on_the_event(store: Store) -> None:
    for name in ("a", "b", "c"):
        add(store, name)
    got = [
        store.runs.claim_next(1, "agent-1", 30),
        store.runs.claim_first(1, "agent-2", 40, lambda q, rows: str(rows[0]["id"])),
        store.runs.claim("c", "agent-3", 50),
    ]
    for run, agent, lease in zip(got, ("agent-1", "agent-2", "agent-3"), (30, 40, 50), strict=True):
        assert run is not None and run["agent_id"] == agent
        event = claimed_event(store, run["id"])
        # The event, the row's update and its lease are one moment: the claim's.
        assert event["agent_id"] == agent
        assert event["at"] == run["updated_at"] == run["lease_expires_at"] - lease
    add(store, "d", claim_for="agent-4")  # a direct launch with no lease given: none
    run = store.runs.get("d")
    assert run["lease_expires_at"] == run["created_at"] == claimed_event(store, "d")["at"]


def test_claim_first_reads_a_second_page_only_when_the_first_has_none_to_take(
    store: Store,
) -> None:
    from launchctl.store.runs import CLAIM_PAGE

    names = [f"r{i}" for i in range(CLAIM_PAGE + 3)]
    for name in names:
        add(store, name)
    seen: list[list[str]] = []

    store.queues.update("default", config={"gpu_sharing": 3})

    def only(wanted: str) -> Any:
        def choose(queue: dict[str, Any], rows: list[dict[str, Any]]) -> str | None:
            assert queue["config"] == {"gpu_sharing": 3}  # on each page
            seen.append([r["id"] for r in rows])
            return wanted if wanted in seen[-1] else None

        return choose

    got = store.runs.claim_first(1, "agent-1", 30, only(names[CLAIM_PAGE + 1]))
    assert got is not None and got["id"] == names[CLAIM_PAGE + 1]
    assert seen == [names[:CLAIM_PAGE], names[CLAIM_PAGE:]]  # then the rest of the scan
    seen.clear()
    # No more than ``scan`` runs are looked at.
    assert store.runs.claim_first(1, "agent-1", 30, only(names[-1]), scan=CLAIM_PAGE + 1) is None
    assert seen == [names[:CLAIM_PAGE], [names[CLAIM_PAGE]]]
    seen.clear()
    # A run taken from the first page is the one claimed: the rest is never read.
    got = store.runs.claim_first(1, "agent-1", 30, only(names[1]))
    assert got is not None and got["id"] == names[1] and seen == [names[:CLAIM_PAGE]]
    seen.clear()
    # Exactly a page waiting, none taken: no second, empty page is offered.
    for name in names:
        if store.runs.state(name) == "queued":
            store.runs.request_cancel(name)
    page = [f"p{i}" for i in range(CLAIM_PAGE)]
    for name in page:
        add(store, name)
    assert store.runs.claim_first(1, "agent-1", 30, only("nothing")) is None
    assert seen == [page]


def test_claim_first_looks_at_200_runs_by_default(store: Store) -> None:
    for i in range(205):
        add(store, f"r{i:03}")
    counted: list[int] = []
    assert store.runs.claim_first(1, "a", 30, lambda q, rows: counted.append(len(rows))) is None
    assert sum(counted) == 200


def test_several_ids_and_states_in_one_query(store: Store) -> None:
    other = make_queue(store, "q2")
    add(store, "a")
    add(store, "b")
    assert store.runs.has_queued([1], besides=["a", "b"]) is False
    assert store.runs.has_queued([1], besides=["a", "zz"]) is True
    soon = time.time() + 100
    set_row(store, "a", not_before=soon)
    assert store.runs.next_retry_at([other, 1]) == soon
    add(store, "c", claim_for="agent-1", lease_s=30)
    assert store.runs.move("c", [State.CLAIMED, State.STARTING], State.FAILED,
                           agent_id="agent-1", reason="x", ended_at=5.0) == "claimed"  # fmt: skip
    assert store.runs.get("c")["ended_at"] == 5.0  # given: kept


def test_move_refuses_what_only_a_claim_sets(store: Store) -> None:
    add(store, "r1", claim_for="agent-1", lease_s=30)
    with pytest.raises(ValueError, match=r"^cannot set \['devices'\] on a run$"):
        store.runs.move("r1", [State.CLAIMED], State.STARTING, devices="[0]")
    assert store.runs.state("r1") == "claimed"
    with pytest.raises(RuntimeError) as err:
        transition(store.db, "r1", [State.CLAIMED], State.STARTING)
    assert str(err.value) == "a state change must be made inside db.write()"
