"""Issue 18: why a queued run waits, and which running runs are stalled, where users look:
`runs list`'s state cell and `--json`, `runs show`, and `status` (table and `--json`).

The claim decides (``launchctl.store.runs``: ``READY``, ``not_before``, ``UNDER_LIMITS``);
these tests check that what is shown is what the claim does: a run shown waiting for a
limit is the one the agent leaves queued, and it starts once the limit allows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StartAgent, cli, cli_json, make_script, wait_for
from tests.step_job import create_step_job


@pytest.fixture(autouse=True)
def as_alice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAUNCHCTL_USER", "alice")


@pytest.fixture
def job(tmp_path: Path) -> str:
    """The job 'step' (tests/step_job.py)."""
    return create_step_job(tmp_path)


def launch(queue: str, *args: str) -> str:
    proc = cli("launch", "-q", queue, "-j", "step", "--quiet", *args, check=True)
    return proc.stdout.strip()


def state(run_id: str) -> str:
    return str(cli_json("runs", "show", run_id)["state"])


def listed(run_id: str) -> dict[str, Any]:
    return next(r for r in cli_json("runs", "list") if r["id"] == run_id)


def cell(run_id: str) -> str:
    """The run's state cell in `runs list` (its columns are split by two spaces or more)."""
    out = cli("runs", "list", "--columns", "none", check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith(run_id))
    return re.split(r"\s{2,}", line.strip())[3]


def queue_status(name: str) -> dict[str, Any]:
    return next(q for q in cli_json("status")["queues"] if q["name"] == name)


def test_a_run_held_back_by_its_users_limit_says_so_and_starts_when_a_slot_frees(
    job: str, start_agent: StartAgent, tmp_path: Path
) -> None:
    cli("queue", "create", "lab", "--config", json.dumps({"limits": {"per_user": 1}}),
        check=True)  # fmt: skip
    gate = tmp_path / "gate"
    first = launch("lab", "--set", f"gate={gate}")
    second = launch("lab")
    start_agent("-q", "lab", "--max-jobs", "4")
    wait_for(lambda: state(first) == "running", what="the first run to start")
    assert state(second) == "queued"  # the agent has three free slots: the limit holds it
    assert cell(second) == "queued (per_user 1/1 in flight)"
    assert listed(second)["limited"] == [
        {"limit": "per_user", "user": "alice", "queue": "lab", "in_flight": 1, "max": 1}
    ]
    assert listed(first)["limited"] == []
    shown = cli("runs", "show", second, check=True).stdout
    assert (
        "waits for:  alice holds 1 of the 1 slot a user may hold in queue lab"
        " (limits.per_user)" in shown
    )
    assert (
        "has not started: held back by a limit: alice holds 1 of the 1 slot a user may hold"
        " in queue lab (limits.per_user)" in cli("logs", second).stderr
    )
    lab = queue_status("lab")
    assert lab["waiting"] == {"held": 0, "after": 0, "time": 0, "limit": 1}
    table = cli("status", check=True).stdout
    head = next(ln for ln in table.splitlines() if ln.startswith("QUEUE"))
    row = next(ln for ln in table.splitlines() if ln.startswith("lab "))
    assert "AT LIMIT" in head
    assert row.split()[:5] == ["lab", "local-process", "1", "1", "1"]  # queued, at limit, active
    gate.touch()
    wait_for(lambda: state(second) == "finished", what="the second run, once a slot freed")
    assert queue_status("lab")["waiting"]["limit"] == 0


def test_a_run_held_back_by_its_arrays_throttle_says_so(
    job: str, start_agent: StartAgent, tmp_path: Path
) -> None:
    """`launch --array 0-1%1` and a one-run array `--array 0%1`, under an agent with one
    slot: the first array's second run waits for its throttle, the other array's run
    only for a slot, and status counts them apart."""
    gate = tmp_path / "gate"
    first = launch("default", "--array", "0-1%1", "--set", f"gate={gate}")
    second = launch("default", "--array", "0%1", "--set", f"gate={gate}")
    rows = {(r["array_id"], r["array_index"]): r["id"] for r in cli_json("runs", "list")}
    start_agent("-q", "default", "--max-jobs", "1")
    wait_for(lambda: state(rows[first, 0]) == "running", what="the oldest run of the array")
    waiting, other = rows[first, 1], rows[second, 0]
    assert state(waiting) == "queued" and state(other) == "queued"
    assert cell(waiting) == "queued (array 1/1 in flight)"
    assert cell(other) == "queued"  # it waits for a slot, not for its array
    assert listed(waiting)["limited"] == [
        {"limit": "array", "array": first, "in_flight": 1, "max": 1}
    ]
    assert listed(other)["limited"] == []
    shown = cli("runs", "show", waiting, check=True).stdout
    assert f"waits for:  array {first}: 1 of 1 in flight (%1)" in shown
    assert f"held back by a limit: array {first}: 1 of 1" in cli("logs", waiting).stderr
    assert queue_status("default")["waiting"]["limit"] == 1
    gate.touch()
    wait_for(lambda: state(waiting) == state(other) == "finished", what="the other runs")


def test_status_counts_why_queued_runs_wait_each_under_its_first_reason(job: str) -> None:
    """No agent serves 'parked': held, waiting for a run, waiting for a time; a run both
    held and delayed counts once, as held (a release leaves it waiting for its time)."""
    cli("queue", "create", "parked", check=True)
    held = launch("parked")
    cli("runs", "hold", held, check=True)
    both = launch("parked", "--delay", "2h")
    cli("runs", "hold", both, check=True)
    launch("parked", "--delay", "2h")
    launch("parked", "--after", held)
    launch("parked")  # claimable: counted in queued only
    parked = queue_status("parked")
    assert parked["queued"] == 5
    assert parked["waiting"] == {"held": 2, "after": 1, "time": 1, "limit": 0}
    table = cli("status", check=True).stdout.splitlines()
    head = next(ln for ln in table if ln.startswith("QUEUE")).split()
    row = next(ln for ln in table if ln.startswith("parked ")).split()
    assert head[:6] == ["QUEUE", "RESOURCE", "QUEUED", "HELD", "AFTER", "DELAYED"]
    assert row[:6] == ["parked", "local-process", "5", "2", "1", "1"]
    cli("runs", "release", both, check=True)
    assert queue_status("parked")["waiting"] == {"held": 1, "after": 1, "time": 2, "limit": 0}


def test_status_lists_stalled_running_runs_by_id(start_agent: StartAgent, tmp_path: Path) -> None:
    """A queue's stall_after: 2s; one run prints nothing, the other prints all along."""
    cli("queue", "create", "watched", "--config", json.dumps({"stall_after": "2s"}),
        check=True)  # fmt: skip
    gate = tmp_path / "gate"
    code = make_script(
        tmp_path / "talk",
        "main.py",
        "import os, sys, time\n"
        "while not os.path.exists(sys.argv[2]):\n"
        "    if sys.argv[1] == 'busy':\n"
        "        print('step', flush=True)\n"
        "    time.sleep(0.1)\n",
    ).parent
    runs = {
        kind: cli("launch", "-q", "watched", "-u", str(code), "-E",
                  f"python main.py {kind} {gate}", "--quiet", check=True).stdout.strip()
        for kind in ("quiet", "busy")
    }  # fmt: skip
    quiet, busy = runs["quiet"], runs["busy"]
    start_agent("-q", "watched", "--max-jobs", "2")
    wait_for(lambda: state(quiet) == state(busy) == "running", what="both runs to start")
    shown = wait_for(
        lambda: (s := cli_json("status"))["stalled_runs"] and s, timeout=60,
        what="the silent run to be found stalled",
    )  # fmt: skip
    assert [r["id"] for r in shown["stalled_runs"]] == [quiet]
    assert shown["stalled_runs"][0]["stalled_s"] >= 0
    assert queue_status("watched")["stalled"] == 1
    active = {r["id"]: r for r in shown["active_runs"]}
    assert active[quiet]["stalled_at"] is not None and active[busy]["stalled_at"] is None
    table = cli("status", check=True).stdout
    section = table.split("Stalled runs", 1)[1].split("Active runs", 1)[0]
    assert quiet in section and busy not in section
    gate.touch()
    wait_for(lambda: state(quiet) == "finished", what="the run to end")
    assert cli_json("status")["stalled_runs"] == []  # a run that ended is no longer stalled
