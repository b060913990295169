"""In-process tests of the GPU pool (issue 19's `nox -s mutate`): launchctl.gpus.policy's
pure functions at their boundaries, and launchctl.store.gpus' claim on a real store.

The agent tests in tests/test_gpus.py drive agents through a subprocess, where a mutant
is never imported; these call the policy and the store directly, through the same
planner an agent uses (``GpuAllocator``). What they hold: no device is handed out twice,
a claimed run gets a lease and its devices on its event, reservations hold devices for a
run that waited past the backfill bound and are dropped when their run or agent is gone.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from launchctl.errors import ConfigError
from launchctl.gpus import devices as disc
from launchctl.gpus.allocator import GpuAllocator, GpuOptions
from launchctl.gpus.policy import (
    MAX_SHARING,
    Ask,
    Candidate,
    Plan,
    Slot,
    check_sharing,
    parse_ask,
    place,
    plan,
    servable,
    sharing_of,
    slots_for,
    to_reserve,
    walk,
    would_fit,
)
from launchctl.states import State
from launchctl.store import Store
from launchctl.store.gpus import STALE_AGENT_S, decode_devices, device_text

# --- the policy --------------------------------------------------------------------------


def test_parse_ask_reads_each_form_and_refuses_the_rest_naming_the_value() -> None:
    assert parse_ask(' "2" ') == Ask(count=2)
    assert parse_ask("device= 3 , 1,3,") == Ask(count=2, exact=(3, 1))
    assert parse_ask("all") == Ask(every=True) and not parse_ask("all").none
    assert parse_ask(0).none and not parse_ask(1).none
    for bad in ("device=", "device=,", "device=a", "device=-1"):
        with pytest.raises(ConfigError) as err:
            parse_ask(bad)
        assert str(err.value) == f"gpus {bad!r}: name devices by index, like device=0,1"
    for bad in ("-1", "two", "1.5", "ALL", "", "X2", "2X"):
        with pytest.raises(ConfigError) as err:
            parse_ask(bad)
        assert str(err.value) == f"gpus must be all, a count or device=ID,...; got {bad!r}"


def test_an_ask_says_what_it_asks_for() -> None:
    assert [str(Ask(count=n)) for n in (0, 1, 2)] == ["0 GPUs", "1 GPU", "2 GPUs"]
    assert str(Ask(every=True)) == "all GPUs" and str(Ask(2, (0, 3))) == "GPUs 0,3"
    assert Ask(count=2).size(8) == 2 and Ask(every=True).size(8) == 8


@pytest.mark.parametrize("value", [1, 2, MAX_SHARING])
def test_gpu_sharing_accepts_1_to_64(value: int) -> None:
    assert check_sharing(value) == value
    assert sharing_of({"gpu_sharing": value}) == value


@pytest.mark.parametrize("value", [0, MAX_SHARING + 1, -1, True, "2", 1.5, None])
def test_gpu_sharing_refuses_the_rest_and_an_unreadable_one_never_shares(value: Any) -> None:
    with pytest.raises(ConfigError) as err:
        check_sharing(value, where="queue q")
    assert str(err.value) == (
        f"queue q: gpu_sharing must be a whole number of runs per GPU, 1 to 64; got {value!r}"
    )
    assert sharing_of({"gpu_sharing": value}) == 1


def test_sharing_defaults_to_one() -> None:
    assert sharing_of(None) == 1 and sharing_of({}) == 1
    with pytest.raises(ConfigError, match=r"^queue config: gpu_sharing"):
        check_sharing(0)


def test_a_device_has_room_up_to_the_smallest_sharing_on_it() -> None:
    slot = Slot(0, runs=["a"], limit=3)
    assert slot.has_room(2, "r") and not slot.has_room(1, "r")  # the run's own limit
    slot.runs.append("b")
    assert slot.has_room(3, "r") and not slot.has_room(2, "r")
    slot.runs.append("c")
    assert not slot.has_room(64, "r")  # the limit of the runs on it: 3
    assert Slot(0).has_room(1, "r") and not Slot(0, external=True).has_room(64, "r")
    mine = Slot(0, reserved_for="r")
    assert mine.has_room(1, "r") and not mine.has_room(1, "other")
    assert mine.reservable("r") and not mine.reservable("other")
    assert Slot(1).reservable("r") and not Slot(1, external=True).reservable("r")


def test_servable_is_whether_these_devices_could_ever_hold_the_ask() -> None:
    four = [Slot(i) for i in range(4)]
    assert servable(Ask(count=4), four) and not servable(Ask(count=5), four)
    assert servable(Ask(2, (1, 3)), four) and not servable(Ask(2, (3, 4)), four)
    assert servable(Ask(every=True), four) and not servable(Ask(every=True), [])
    assert not servable(Ask(count=1), [])


def test_place_takes_the_reserved_then_least_loaded_then_lowest_devices() -> None:
    slots = [Slot(0, ["a"], limit=4), Slot(1, ["a", "b"], limit=4), Slot(2, ["c"], limit=4),
             Slot(3, ["d"], limit=4, reserved_for="r")]  # fmt: skip
    assert place(Ask(count=1), slots, 4, "r") == [3]  # its reservation first
    assert place(Ask(count=2), slots, 4, "r") == [0, 3]
    assert place(Ask(count=3), slots, 4, "r") == [0, 2, 3]
    assert place(Ask(count=3), slots, 4, "x") == [0, 1, 2]  # 3 is not for it
    assert place(Ask(count=4), slots, 4, "x") is None
    assert place(Ask(2, (2, 1)), slots, 4, "x") == [2, 1]  # as named
    assert place(Ask(2, (2, 3)), slots, 4, "x") is None
    assert place(Ask(every=True), slots, 4, "r") == [0, 1, 2, 3]
    assert place(Ask(every=True), slots, 4, "x") is None


def test_to_reserve_takes_free_then_least_loaded_devices_others_have_not_reserved() -> None:
    slots = [Slot(0, ["a", "b"]), Slot(1, ["a"]), Slot(2), Slot(3, reserved_for="old")]
    assert to_reserve(Ask(count=2), slots, "r") == [1, 2]
    assert to_reserve(Ask(count=3), slots, "r") == [0, 1, 2]
    assert to_reserve(Ask(count=4), slots, "r") is None
    assert to_reserve(Ask(count=4), slots, "old") == [0, 1, 2, 3]


def test_a_run_with_an_unreadable_or_no_ask_is_taken_at_once_without_devices() -> None:
    full = [Slot(0, ["a"])]
    for ask in (None, Ask()):
        got = plan([Candidate("x", ask, sharing=3)], full, backfill_s=0)
        assert (got.run_id, got.devices, got.sharing) == ("x", [], 3)


def test_a_run_taken_at_once_keeps_what_the_pass_found_before_it() -> None:
    slots = [Slot(0, ["a"]), Slot(1)]
    got = plan([Candidate("huge", Ask(count=3)), Candidate("big", Ask(count=2), waited_s=99),
                Candidate("x", None)], slots, backfill_s=60)  # fmt: skip
    assert got == Plan("x", [], 1, {"big": [0, 1]}, {"huge": Ask(count=3)})


def test_a_run_within_the_bound_is_passed_by_the_runs_behind_it() -> None:
    slots = [Slot(0, ["a"]), Slot(1)]
    got = plan([Candidate("big", Ask(count=2), waited_s=1), Candidate("s", Ask(count=1))],
               slots, backfill_s=60)  # fmt: skip
    assert got == Plan("s", [1])


def test_a_run_holding_part_of_what_it_needs_reserves_the_rest() -> None:
    slots = [Slot(0, ["a"], reserved_for="big"), Slot(1, ["b"]), Slot(2, ["c", "d"])]
    got = plan([Candidate("big", Ask(count=2), waited_s=99)], slots, backfill_s=60)
    assert got.reserve == {"big": [0, 1]} and got.run_id is None
    every = to_reserve(Ask(every=True), slots, "big")
    assert every == [0, 1, 2] and to_reserve(Ask(every=True), slots, "other") is None


def test_plan_passes_over_what_this_agent_can_never_hold_and_says_so() -> None:
    slots = [Slot(0), Slot(1)]
    got = plan([Candidate("big", Ask(count=3)), Candidate("ok", Ask(count=2), sharing=2)],
               slots, backfill_s=0)  # fmt: skip
    assert got == Plan("ok", [0, 1], 2, {}, {"big": Ask(count=3)})


def test_the_backfill_bound_is_inclusive_and_a_held_reservation_is_not_rewritten() -> None:
    def slots() -> list[Slot]:
        return [Slot(0, ["a"]), Slot(1)]

    big = Ask(count=2)
    # Waited exactly the bound: its devices are reserved; a moment less: not yet.
    assert plan([Candidate("big", big, waited_s=60)], slots(), 60).reserve == {"big": [0, 1]}
    assert plan([Candidate("big", big, waited_s=59.9)], slots(), 60).reserve == {}
    # Already holding them: nothing new to record, and nothing else may take them.
    held = [Slot(0, ["a"], reserved_for="big"), Slot(1, reserved_for="big")]
    got = plan([Candidate("big", big, waited_s=99), Candidate("s", Ask(count=1))], held, 60)
    assert got == Plan()
    # An older reservation keeps its devices: the younger big run reserves nothing (it
    # goes after the older one), and a small run may still take the free device.
    older = [Slot(0, ["a"], reserved_for="old"), Slot(1)]
    got = plan([Candidate("big", big, waited_s=99), Candidate("s", Ask(count=1))], older, 60)
    assert got == Plan("s", [1]) and older[1].reserved_for is None


def test_a_reservation_made_in_one_pass_binds_the_runs_behind_it() -> None:
    slots = [Slot(0, ["a"]), Slot(1), Slot(2, ["b"])]
    got = plan([Candidate("big", Ask(count=2), waited_s=61), Candidate("s", Ask(count=1))],
               slots, 60)  # fmt: skip
    # GPU 1 (free) and GPU 0 (lowest of the busy) are held: the small run may not take 1.
    assert got.reserve == {"big": [0, 1]} and got.run_id is None
    assert [s.reserved_for for s in slots] == ["big", "big", None]


def test_would_fit_is_now_and_here() -> None:
    assert would_fit(Ask(count=1), [Slot(0)]) and not would_fit(Ask(count=1), [Slot(0, ["a"])])
    assert would_fit(Ask(count=1), [Slot(0, ["a"], limit=2)], sharing=2)
    assert not would_fit(Ask(count=2), [Slot(0)])


def test_slots_for_reads_allocations_reservations_and_outside_use() -> None:
    slots = slots_for(
        [0, 1, 2],
        [{"idx": 0, "run_id": "a", "sharing": 4}, {"idx": 0, "run_id": "b", "sharing": 2},
         {"idx": 9, "run_id": "c", "sharing": 1}],
        [{"idx": 1, "run_id": "r"}, {"idx": 9, "run_id": "q"}],
        used_mb={1: 1025, 2: 1024, 9: 99999},
        busy_mb=1024,
    )  # fmt: skip
    assert [(s.index, s.runs, s.limit, s.reserved_for, s.external) for s in slots] == [
        (0, ["a", "b"], 2, None, False),
        (1, [], 1 << 30, "r", True),  # above the threshold, by someone else
        (2, [], 1 << 30, None, False),  # at it: not busy
    ]
    assert [s.external for s in slots_for([0], [], [], None)] == [False]


def test_walk_reads_each_ask_and_how_long_it_waited() -> None:
    def ask_of(row: dict[str, Any]) -> Ask:
        if row["id"] == "bad":
            raise ValueError("unreadable")
        return Ask(count=1)

    rows = [{"id": "a", "waiting_since": 90.0}, {"id": "bad", "waiting_since": 100.0},
            {"id": "future", "waiting_since": 130.0}]  # fmt: skip
    got = list(walk(rows, ask_of, 3, now=120.0))
    assert got == [
        Candidate("a", Ask(count=1), 3, 30.0),
        Candidate("bad", None, 3, 20.0),
        Candidate("future", Ask(count=1), 3, 0.0),
    ]


# --- the store: one pool per machine -------------------------------------------------------


def add_run(store: Store, run_id: str, gpus: Any = 1, *, queue_id: int = 1) -> str:
    spec: dict[str, Any] = {"resource_args": {"local-process": {"gpus": gpus}}}
    store.runs.insert(
        {
            "id": run_id, "queue_id": queue_id, "queue_name": "default",
            "job_version_id": None, "name": run_id, "project": "p", "entity": "e",
            "resource": "local-process", "spec": spec, "priority": 2,
        }
    )  # fmt: skip
    return run_id


def allocator(
    store: Store, agent_id: str, host: str = "h1", devices: int = 4, backfill_s: float = 60
) -> GpuAllocator:
    store.agents.register(agent_id, host=host, pid=1, queues=["default"], max_jobs=8)
    options = GpuOptions(devices=disc.configured(list(range(devices))), backfill_s=backfill_s)
    gpus = GpuAllocator(store, options, agent_id, host=host)
    gpus.start()
    return gpus


def held(store: Store, host: str = "h1") -> list[tuple[int, str, int, str]]:
    rows = store.gpus.allocations(host)
    return [(r["idx"], r["run_id"], r["sharing"], r["agent_id"]) for r in rows]


def test_two_agents_on_one_machine_never_hand_out_a_device_twice(store: Store) -> None:
    a, b = allocator(store, "agent-a"), allocator(store, "agent-b")
    for i in range(5):
        add_run(store, f"r{i}", 2 if i == 2 else 1)
    before = time.time()
    first = a.claim(1, lease_s=30)
    assert first is not None and first["id"] == "r0" and first["devices"] == [0]
    assert (first["state"], first["agent_id"]) == ("claimed", "agent-a")
    assert before + 30 <= first["lease_expires_at"] <= time.time() + 30
    claimed_at = [e["at"] for e in store.runs.events("r0") if e["to_state"] == "claimed"]
    assert claimed_at == [first["lease_expires_at"] - 30] == [first["updated_at"]]
    second = b.claim(1, lease_s=30)
    assert second is not None and (second["id"], second["devices"]) == ("r1", [1])
    third = a.claim(1, lease_s=30)
    assert third is not None and (third["id"], third["devices"]) == ("r2", [2, 3])
    assert b.claim(1, lease_s=30) is None  # every device is held: r3 waits
    assert held(store) == [(0, "r0", 1, "agent-a"), (1, "r1", 1, "agent-b"),
                           (2, "r2", 1, "agent-a"), (3, "r2", 1, "agent-a")]  # fmt: skip
    claims = [(e["run_id"], e["agent_id"], e["message"]) for e in store.runs.events()
              if e["to_state"] == "claimed"]  # fmt: skip
    assert claims == [("r0", "agent-a", "GPUs 0"), ("r1", "agent-b", "GPUs 1"),
                      ("r2", "agent-a", "GPUs 2,3")]  # fmt: skip
    # Its end frees its devices (the store's trigger), and the next run gets them.
    store.runs.move("r1", [State.CLAIMED], State.FAILED, agent_id="agent-b", reason="x")
    got = a.claim(1, lease_s=30)
    assert got is not None and (got["id"], got["devices"]) == ("r3", [1])


def test_each_machine_has_its_own_pool(store: Store) -> None:
    here, there = allocator(store, "agent-a", "h1"), allocator(store, "agent-b", "h2")
    add_run(store, "r0")
    add_run(store, "r1")
    assert [here.claim(1, 30)["devices"], there.claim(1, 30)["devices"]] == [[0], [0]]  # type: ignore[index]
    assert held(store, "h1") == [(0, "r0", 1, "agent-a")]
    assert held(store, "h2") == [(0, "r1", 1, "agent-b")]
    assert len(store.gpus.allocations()) == 2


def test_a_paused_queue_gives_nothing(store: Store) -> None:
    gpus = allocator(store, "agent-a")
    add_run(store, "r0")
    store.queues.update("default", paused=1)
    assert gpus.claim(1, lease_s=30) is None
    assert store.runs.state("r0") == "queued" and store.gpus.allocations() == []


def test_a_run_asking_no_gpu_is_claimed_without_devices(store: Store) -> None:
    gpus = allocator(store, "agent-a")
    add_run(store, "r0", gpus=0)
    got = gpus.claim(1, lease_s=30)
    assert got is not None and got["devices"] == [] and store.gpus.allocations() == []
    claimed = [e for e in store.runs.events("r0") if e["to_state"] == "claimed"]
    assert claimed[0]["message"] is None


def test_shared_devices_record_their_sharing(store: Store) -> None:
    gpus = allocator(store, "agent-a", devices=1)
    store.queues.update("default", config={"gpu_sharing": 2})
    for i in range(3):
        add_run(store, f"r{i}")
    assert gpus.claim(1, 30) is not None and gpus.claim(1, 30) is not None
    assert gpus.claim(1, 30) is None
    assert held(store) == [(0, "r0", 2, "agent-a"), (0, "r1", 2, "agent-a")]


def test_a_run_past_the_backfill_bound_gets_its_devices_reserved_then_claimed(
    store: Store,
) -> None:
    gpus = allocator(store, "agent-a", devices=2, backfill_s=0)
    add_run(store, "small")
    assert gpus.claim(1, 30) is not None  # GPU 0
    add_run(store, "big", gpus=2)
    add_run(store, "late")
    assert gpus.claim(1, 30) is None  # big is held for GPUs 0,1; late may not take GPU 1
    rows = store.gpus.reservations("h1")
    assert [(r["idx"], r["run_id"], r["agent_id"]) for r in rows] == [
        (0, "big", "agent-a"), (1, "big", "agent-a")]  # fmt: skip
    notes = [(e["from_state"], e["to_state"], e["agent_id"], e["message"])
             for e in store.runs.events("big")][1:]  # fmt: skip
    assert notes == [
        ("queued", "queued", "agent-a", "GPUs 0,1 reserved: it waited past the backfill bound")
    ]
    assert gpus.claim(1, 30) is None  # the same reservation is not noted twice
    assert len(store.runs.events("big")) == 2
    store.runs.move("small", [State.CLAIMED], State.FAILED, agent_id="agent-a", reason="x")
    got = gpus.claim(1, 30)
    assert got is not None and (got["id"], got["devices"]) == ("big", [0, 1])
    assert store.gpus.reservations() == []


def test_stale_allocations_and_reservations_are_dropped(store: Store) -> None:
    gpus = allocator(store, "agent-a", devices=2, backfill_s=0)
    add_run(store, "small")
    assert gpus.claim(1, 30) is not None
    add_run(store, "big", gpus=2)
    assert gpus.claim(1, 30) is None and len(store.gpus.reservations()) == 2
    # A hand edit leaves an allocation no held run stands behind; another host's stays.
    store.db.execute("INSERT INTO gpu_allocations (host, idx, run_id, sharing, agent_id, at)"
                     " VALUES ('h1', 1, 'big', 1, 'agent-a', 0),"
                     " ('h2', 1, 'big', 1, 'agent-a', 0)")  # fmt: skip
    assert store.gpus.free_stale("h1") == 1
    assert held(store) == [(0, "small", 1, "agent-a")]
    assert len(store.gpus.allocations("h2")) == 1
    assert len(store.gpus.reservations()) == 2  # its run waits, its agent is alive
    # An agent silent for longer than STALE_AGENT_S: its reservations go.
    store.db.execute("UPDATE agents SET heartbeat_at = ?", [time.time() - STALE_AGENT_S - 5])
    assert store.gpus.free_stale("h1") == 0 and store.gpus.reservations() == []
    # One that beat just now keeps them; one that stopped loses them.
    store.agents.heartbeat("agent-a")
    assert gpus.claim(1, 30) is None and len(store.gpus.reservations()) == 2
    store.agents.stopped("agent-a")
    store.gpus.free_stale("h1")
    assert store.gpus.reservations() == []


def test_a_silent_agents_reservation_does_not_hold_a_claim_back(store: Store) -> None:
    gone = allocator(store, "agent-gone", devices=1, backfill_s=0)
    add_run(store, "small")
    assert gone.claim(1, 30) is not None
    add_run(store, "big")
    assert gone.claim(1, 30) is None and len(store.gpus.reservations()) == 1  # GPU 0: big
    store.runs.move("small", [State.CLAIMED], State.FAILED, agent_id="agent-gone", reason="x")
    other = allocator(store, "agent-b", devices=1, backfill_s=3600)
    store.db.execute("UPDATE agents SET heartbeat_at = ? WHERE id = 'agent-gone'",
                     [time.time() - STALE_AGENT_S - 5])  # fmt: skip
    add_run(store, "urgent")
    store.db.execute("UPDATE runs SET priority = 0 WHERE id = 'urgent'")
    assert len(store.gpus.reservations()) == 1
    got = other.claim(1, 30)  # the claim itself drops the silent agent's reservation
    assert got is not None and (got["id"], got["devices"]) == ("urgent", [0])
    assert store.gpus.reservations() == []


def test_a_paused_queue_or_a_run_no_longer_waiting_loses_its_reservation(store: Store) -> None:
    gpus = allocator(store, "agent-a", devices=1, backfill_s=0)
    add_run(store, "small")
    assert gpus.claim(1, 30) is not None
    add_run(store, "big")
    assert gpus.claim(1, 30) is None and len(store.gpus.reservations()) == 1
    store.queues.update("default", paused=1)
    store.gpus.free_stale("h1")
    assert store.gpus.reservations() == []
    store.queues.update("default", paused=0)
    assert gpus.claim(1, 30) is None and len(store.gpus.reservations()) == 1
    store.runs.request_cancel("big")
    store.gpus.free_stale("h1")
    assert store.gpus.reservations() == []


def test_the_machines_devices_as_reported(store: Store) -> None:
    found = [disc.Device(index=0, name="A", memory_mb=80, uuid="GPU-a"),
             disc.Device(index=1, name="A", memory_mb=80, uuid="GPU-b")]  # fmt: skip
    store.gpus.report("h1", found, "nvml")
    store.gpus.report("h1", found[:1], "nvml")  # found again: replaces
    store.gpus.report("h1", disc.configured([3]), "configured")  # configured: adds
    store.gpus.report("h0", disc.configured([0, 1, 2]), "configured")
    rows = [(r["host"], r["idx"], r["name"], r["memory_mb"], r["uuid"], r["source"])
            for r in store.gpus.inventory()]  # fmt: skip
    assert rows == [
        ("h0", 0, "(configured)", None, None, "configured"),
        ("h0", 1, "(configured)", None, None, "configured"),
        ("h0", 2, "(configured)", None, None, "configured"),
        ("h1", 0, "A", 80, "GPU-a", "nvml"),
        ("h1", 3, "(configured)", None, None, "configured"),
    ]
    assert [r["idx"] for r in store.gpus.inventory("h1")] == [0, 3]
    assert store.gpus.machine("h1") == ("h1", [0, 3])
    # Another host's agent: the host with most devices (not the last name).
    assert store.gpus.machine("elsewhere") == ("h0", [0, 1, 2])
    store.gpus.report("h0", [], "nvml")
    assert store.gpus.machine("elsewhere") == ("h1", [0, 3])
    store.gpus.report("h1", [], "nvml")
    assert store.gpus.machine("h1") is None


def test_devices_as_stored_and_said() -> None:
    assert decode_devices(None) is None and decode_devices([1]) == [1]
    assert decode_devices("[0, 2]") == [0, 2] and decode_devices('["3"]') == [3]
    assert decode_devices('{"a": 1}') is None
    assert device_text([0, 1]) == "GPUs 0,1" and device_text([]) == "GPUs "
