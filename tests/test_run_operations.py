"""The core's run operations (``launchctl.runs``) that the CLI calls, and the store verb
the agent's recovery uses to find the agents that may have died."""

from __future__ import annotations

import itertools
import socket
from pathlib import Path

import pytest

from launchctl import runs
from launchctl.errors import UsageError
from launchctl.launch import LaunchRequest, prepare_spec, submit
from launchctl.store import Row, Store
from launchctl.teams import PermissionDenied
from tests.conftest import EXAMPLES, cli


def _queued(store: Store) -> Row:
    spec = prepare_spec(
        LaunchRequest(uri=str(EXAMPLES / "hello"), entry_point="python train.py", queue="default")
    )
    return submit(store, spec)


def test_check_filters_refuses_unknown_states_and_negative_limits() -> None:
    with pytest.raises(UsageError, match=r"unknown state 'done': choose from .*finished"):
        runs.check_filters(["queued", "done"], 5)
    with pytest.raises(UsageError, match="--limit must be 0"):
        runs.check_filters([], -1)
    assert runs.check_filters(["queued", "running"], 0) == 0
    assert runs.check_filters([], 10**30) == 1 << 62  # SQLite integers are 64-bit


def test_a_refused_runs_list_creates_no_store(home: Path) -> None:
    proc = cli("runs", "list", "--state", "done")
    assert proc.returncode == 1 and "unknown state 'done'" in proc.stderr
    assert not home.exists()


def test_runs_list_of_a_queue_that_never_was_is_refused(store: Store) -> None:
    """A typo is not an empty queue; a deleted queue's runs are still listed by its name."""
    run = _queued(store)
    proc = cli("runs", "list", "-q", "nosuch")
    assert proc.returncode == 1 and proc.stderr == (
        "launchctl: error: queue 'nosuch' does not exist (see `launchctl queue list`)\n"
    )
    cli("queue", "create", "empty", check=True)
    assert cli("runs", "list", "-q", "empty", check=True).stdout.count("\n") == 1  # the header
    store.db.execute("UPDATE runs SET queue_name = 'was' WHERE id = ?", [run["id"]])
    assert [r["id"] for r in runs.listing(store, queue="was")] == [run["id"]]
    assert runs.listing(store, queue="was", states=["running"]) == []


def test_listing_and_details(store: Store) -> None:
    run = _queued(store)
    other = _queued(store)
    assert [r["id"] for r in runs.listing(store, queue="default")] == [other["id"], run["id"]]
    assert [r["id"] for r in runs.listing(store, states=["queued"], limit=1)] == [other["id"]]
    assert runs.listing(store, states=["running"]) == []
    prefix = run["id"][:6]  # a unique prefix is enough
    shown = runs.details(store, run["id"] if other["id"].startswith(prefix) else prefix)
    assert shown["id"] == run["id"]
    assert [(e["from_state"], e["to_state"]) for e in shown["events"]] == [(None, "queued")]
    assert shown["attempts"] == []  # no claim yet
    assert shown["log_path"] == str(store.run_dir(run["id"]) / "output.log")


def test_an_ambiguous_prefix_says_so_and_names_the_runs_it_fits(store: Store) -> None:
    """A prefix several runs start with is not "does not exist": the line names some of
    them. 37 runs: two of them start with the same one of 36 characters."""
    ids = sorted(str(_queued(store)["id"]) for _ in range(37))
    first = next(a[0] for a, b in itertools.pairwise(ids) if a[0] == b[0])
    fits = [i for i in ids if i.startswith(first)]
    shown = ", ".join(fits[:3]) + (", ..." if len(fits) > 3 else "")
    proc = cli("runs", "show", first)
    assert proc.returncode == 1
    assert (
        proc.stderr
        == f"launchctl: error: run id '{first}' is ambiguous ({shown}): give more of it\n"
    )
    assert runs.details(store, fits[0][:8])["id"] == fits[0]  # a whole id still works


def test_cancel_is_refused_to_a_stranger_and_writes_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _queued(store)
    before = store.runs.events(run["id"])
    monkeypatch.setenv("LAUNCHCTL_USER", "mallory")
    with pytest.raises(PermissionDenied, match="may not cancel run"):
        runs.cancel(store, run["id"])
    assert store.runs.state(run["id"]) == "queued"
    assert store.runs.events(run["id"]) == before
    monkeypatch.delenv("LAUNCHCTL_USER")
    cancelled, state = runs.cancel(store, run["id"])
    assert (cancelled["id"], state) == (run["id"], "stopped")
    assert store.runs.state(run["id"]) == "stopped"


def test_serving_agents_are_the_live_ones_of_that_queue(store: Store) -> None:
    host = socket.gethostname()
    store.agents.register("a1", host=host, pid=1, queues=["default"], max_jobs=1)
    store.agents.register("a2", host=host, pid=2, queues=["other"], max_jobs=1)
    assert [a["id"] for a in runs.serving_agents(store, "default")] == ["a1"]
    store.agents.stopped("a1")
    assert runs.serving_agents(store, "default") == []


def test_unstopped_on_lists_this_hosts_other_agents_that_never_stopped(store: Store) -> None:
    store.agents.register("me", host="h1", pid=10, queues=["default"], max_jobs=1)
    store.agents.register("peer", host="h1", pid=11, queues=["default"], max_jobs=1)
    store.agents.register("gone", host="h1", pid=12, queues=["default"], max_jobs=1)
    store.agents.register("far", host="h2", pid=13, queues=["default"], max_jobs=1)
    store.agents.stopped("gone")
    assert [a["id"] for a in store.agents.unstopped_on("h1", besides="me")] == ["peer"]
