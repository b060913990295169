"""Issue 18: a queue's ``limits: {per_user: N}``: no launcher holds more than N of its
slots, so a labmate's backlog does not starve anyone else's runs.

The runs write their own start and end times (O_APPEND, one line each) to a file, so the
checks of "at no moment" read what really ran, not what the store says about it.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from launchctl import limits
from launchctl.store import Store
from tests.conftest import StartAgent, cli, cli_json, make_script, table_counts, wait_for

LEAD = {"LAUNCHCTL_USER": "lead"}  # the lab's admin; the agents run as it
ALICE = {"LAUNCHCTL_USER": "alice"}
BOB = {"LAUNCHCTL_USER": "bob"}
CAROL = {"LAUNCHCTL_USER": "carol"}

STEP = """\
import json, os, time
cfg = json.loads(os.environ["WANDB_CONFIG"])

def record(what):
    who = os.environ["LAUNCHCTL_RUN_ID"], os.environ.get("WANDB_USERNAME", "-")
    line = f"{time.time()!r} {what} {who[0]} {who[1]}\\n"
    fd = os.open(cfg["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, line.encode())
    os.close(fd)

record("start")
while not os.path.exists(cfg["gate"]):
    time.sleep(0.02)
record("end")
"""


def make_lab(tmp_path: Path, config: dict[str, Any]) -> None:
    """Team 'lab' (lead admin; alice, bob, carol members), its queue 'lab' with ``config``
    and its job 'step', which records its start and end and waits for its gate between."""
    cli("team", "create", "lab", env=LEAD, check=True)
    for user in ("alice", "bob", "carol"):
        cli("team", "add", "lab", user, env=LEAD, check=True)
    cli("queue", "create", "lab", "--entity", "lab", "--config", json.dumps(config),
        env=LEAD, check=True)  # fmt: skip
    code = make_script(tmp_path / "step", "main.py", STEP).parent
    cli("job", "create", "code", str(code), "-E", "python main.py", "-n", "step", "-e", "lab",
        env=LEAD, check=True)  # fmt: skip


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The lab with ``limits.per_user: 2``; agents started here run as lead. Returns the
    file the runs record into."""
    make_lab(tmp_path, {"limits": {"per_user": 2}})
    monkeypatch.setenv("LAUNCHCTL_USER", "lead")
    return tmp_path / "records"


def launch(env: dict[str, str], log: Path, gate: Path, *args: str) -> str:
    proc = cli("launch", "-q", "lab", "-j", "step", "--quiet", "--set", f"log={log}",
               "--set", f"gate={gate}", *args, env=env, check=True)  # fmt: skip
    return proc.stdout.strip()


def records(log: Path) -> list[tuple[float, str, str, str]]:
    """(time, start|end, run id, user) for every line the runs wrote, in time order."""
    if not log.exists():
        return []
    rows = []
    for line in log.read_text().splitlines():
        at, what, run_id, user = line.split()
        rows.append((float(at), what, run_id, user))
    # An end and a start at the same instant: the end first (a slot is freed, then taken).
    return sorted(rows, key=lambda r: (r[0], r[1] == "start"))


def most_at_once(log: Path) -> dict[str, int]:
    """The most runs each user had between their start and end records at one moment."""
    now: dict[str, int] = defaultdict(int)
    most: dict[str, int] = defaultdict(int)
    for _, what, _, user in records(log):
        now[user] += 1 if what == "start" else -1
        most[user] = max(most[user], now[user])
    return dict(most)


def started(log: Path) -> list[str]:
    return [run_id for _, what, run_id, _ in records(log) if what == "start"]


def states(ids: list[str]) -> dict[str, str]:
    wanted = set(ids)
    return {r["id"]: r["state"] for r in cli_json("runs", "list", "--limit", "0")
            if r["id"] in wanted}  # fmt: skip


def claims(run_id: str) -> int:
    events = cli_json("runs", "show", run_id)["events"]
    return sum(1 for e in events if e["to_state"] == "claimed" and e["from_state"] != "claimed")


def why(run_id: str) -> str | None:
    store = Store()
    try:
        return limits.why_waiting(store, store.runs.get(run_id))
    finally:
        store.close()


def refused(env: dict[str, str], *args: str) -> str:
    proc = cli(*args, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


def test_three_users_two_agents_nobody_holds_more_than_two_and_nobody_starves(
    lab: Path, tmp_path: Path, start_agent: StartAgent
) -> None:
    """alice queues 6 runs first, then bob 2, then carol 2, on a queue with per_user 2
    served by two agents with 4 slots each: 8 slots, 10 runs. alice gets 2, bob and carol
    start at once beside her (before alice's 3rd), nobody ever has 3 running, and every
    run runs exactly once."""
    gate = tmp_path / "gate"
    alice = [launch(ALICE, lab, gate) for _ in range(6)]
    bob = [launch(BOB, lab, gate) for _ in range(2)]
    carol = [launch(CAROL, lab, gate) for _ in range(2)]
    every = alice + bob + carol
    for _ in range(2):
        start_agent("-q", "lab", "-j", "4")
    wait_for(lambda: len(started(lab)) == 6, timeout=60, what="6 runs to start")
    # Two free slots among the agents, four of alice's runs waiting: none of them runs.
    assert sorted(started(lab)) == sorted(alice[:2] + bob + carol)
    waiting = [r for r, s in states(every).items() if s == "queued"]
    assert sorted(waiting) == sorted(alice[2:])
    assert why(alice[5]) == (
        "alice holds 2 of the 2 slots a user may hold in queue lab (limits.per_user)"
    )
    assert why(bob[0]) is None  # running: nothing holds it back
    gate.touch()
    wait_for(lambda: set(states(every).values()) == {"finished"}, timeout=90,
             what="all 10 runs to finish")  # fmt: skip
    assert most_at_once(lab) == {"alice": 2, "bob": 2, "carol": 2}
    order = started(lab)
    assert sorted(order) == sorted(every)  # each started once
    last_alice = [order.index(r) for r in alice[2:]]
    assert all(order.index(r) < min(last_alice) for r in bob + carol)
    assert [claims(r) for r in every] == [1] * 10


def test_the_launcher_is_who_the_run_counts_against_whatever_the_spec_says(
    lab: Path, tmp_path: Path, start_agent: StartAgent
) -> None:
    """alice cannot escape her limit by writing another author into her launch config; an
    admin's runs are limited as anyone's; a rerun counts against whoever reran it."""
    gate = tmp_path / "gate"
    mine = [launch(ALICE, lab, gate) for _ in range(2)]
    disguised = launch(ALICE, lab, gate, "-c", json.dumps({"author": "carol"}))
    shown = cli_json("runs", "show", disguised)
    assert shown["author"] == "alice" and shown["spec"]["author"] == "alice"
    start_agent("-q", "lab", "-j", "8")
    wait_for(lambda: len(started(lab)) == 2, what="alice's first two runs to start")
    # the admin reruns one of alice's runs: the rerun is lead's, and lead has a free slot
    rerun = cli("runs", "rerun", mine[0], env=LEAD, check=True).stdout.strip().split()[-1]
    assert cli_json("runs", "show", rerun)["author"] == "lead"
    wait_for(lambda: rerun in started(lab), what="lead's rerun to start")
    more = [launch(LEAD, lab, gate) for _ in range(2)]
    wait_for(lambda: more[0] in started(lab), what="lead's second run to start")
    assert states([disguised, more[1]]) == {disguised: "queued", more[1]: "queued"}
    assert why(disguised) == (
        "alice holds 2 of the 2 slots a user may hold in queue lab (limits.per_user)"
    )
    assert why(more[1]) == (
        "lead holds 2 of the 2 slots a user may hold in queue lab (limits.per_user)"
    )
    gate.touch()
    every = [*mine, disguised, rerun, *more]
    wait_for(lambda: set(states(every).values()) == {"finished"}, timeout=60,
             what="every run to finish")  # fmt: skip
    assert most_at_once(lab) == {"alice": 2, "lead": 2}
    assert sorted(started(lab)) == sorted(every)


def test_a_lowered_limit_stops_no_running_run_and_holds_new_claims_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start_agent: StartAgent
) -> None:
    """per_user 3, alice runs 3; the admin lowers it to 1: her 3 go on, and her 4th starts
    only once she holds none (not when she is back to 2, the old limit's room)."""
    make_lab(tmp_path, {"limits": {"per_user": 3}})
    monkeypatch.setenv("LAUNCHCTL_USER", "lead")
    log = tmp_path / "records"
    gates = [tmp_path / f"gate-{i}" for i in range(4)]
    runs = [launch(ALICE, log, g) for g in gates]
    start_agent("-q", "lab", "-j", "8")
    wait_for(lambda: len(started(log)) == 3, what="3 runs to start")
    cli("queue", "edit", "lab", "--config", '{"limits": {"per_user": 1}}', env=LEAD, check=True)
    assert cli_json("queue", "show", "lab")["config"]["limits"] == {"per_user": 1}
    assert states(runs[:3]) == dict.fromkeys(runs[:3], "running")
    assert why(runs[3]) == (
        "alice holds 3 slots in queue lab, over the 1 a user may hold now"
        " (limits.per_user was lowered): new runs wait until under it"
    )
    for i in range(3):
        gates[i].touch()
        wait_for(lambda i=i: states([runs[i]])[runs[i]] == "finished", what=f"run {i} to end")
        if i < 2:
            assert states([runs[3]])[runs[3]] == "queued"
    gates[3].touch()
    wait_for(lambda: states([runs[3]])[runs[3]] == "finished", what="the 4th run to end")
    ends = {r: at for at, what, r, _ in records(log) if what == "end"}
    fourth = next(at for at, what, r, _ in records(log) if what == "start" and r == runs[3])
    assert fourth > max(ends[r] for r in runs[:3])
    assert [claims(r) for r in runs] == [1] * 4


def test_gpu_claims_keep_the_limit_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start_agent: StartAgent
) -> None:
    """Runs that ask for a GPU are claimed by the GPU claim (``--gpus 0,1``, no hardware
    needed: the agent hands out the indices it was given); it reads the same limit."""
    make_lab(tmp_path, {"limits": {"per_user": 1},
                        "resource_args": {"local-process": {"gpus": 1}}})  # fmt: skip
    monkeypatch.setenv("LAUNCHCTL_USER", "lead")
    log = tmp_path / "records"
    gate = tmp_path / "gate"
    alice = [launch(ALICE, log, gate) for _ in range(2)]
    bob = launch(BOB, log, gate)
    start_agent("-q", "lab", "--gpus", "0,1", "-j", "2")
    wait_for(lambda: len(started(log)) == 2, what="two GPU runs to start")
    assert sorted(started(log)) == sorted([alice[0], bob])
    shown = {r: cli_json("runs", "show", r) for r in (alice[0], bob)}
    assert sorted(d for r in shown.values() for d in r["devices"]) == [0, 1]
    assert states([alice[1]]) == {alice[1]: "queued"}
    gate.touch()
    wait_for(lambda: set(states([*alice, bob]).values()) == {"finished"}, what="all to end")
    assert most_at_once(log) == {"alice": 1, "bob": 1}


def test_runs_with_no_recorded_launcher_count_together(
    lab: Path, tmp_path: Path, home: Path, start_agent: StartAgent
) -> None:
    """Runs from before launchers were recorded (no author) are one unknown launcher to
    the limit: they neither escape it nor take anyone else's slots."""
    gate = tmp_path / "gate"
    old = [launch(ALICE, lab, gate) for _ in range(3)]
    bob = launch(BOB, lab, gate)
    conn = sqlite3.connect(home / "launchctl.db")  # as an older store's runs would be
    with conn:
        conn.executemany(
            "UPDATE runs SET author = NULL, spec = json_remove(spec, '$.author') WHERE id = ?",
            [(r,) for r in old],
        )
    conn.close()
    start_agent("-q", "lab", "-j", "8")
    wait_for(lambda: len(started(lab)) == 3, what="two old runs and bob's to start")
    assert bob in started(lab)
    assert states([old[2]]) == {old[2]: "queued"}
    assert why(old[2]) == (
        "runs with no recorded launcher hold 2 of the 2 slots a user may hold in queue lab"
        " (limits.per_user)"
    )
    gate.touch()
    wait_for(lambda: set(states([*old, bob]).values()) == {"finished"}, what="all to end")


BAD_LIMITS = [
    ({"limits": {"per_user": 0}}, "limits.per_user must be a whole number from 1 to 100000"),
    ({"limits": {"per_user": -2}}, "limits.per_user must be a whole number"),
    ({"limits": {"per_user": 2.5}}, "limits.per_user must be a whole number"),
    ({"limits": {"per_user": "2"}}, "limits.per_user must be a whole number"),
    ({"limits": {"per_user": True}}, "limits.per_user must be a whole number"),
    ({"limits": {"per_user": None}}, "limits.per_user must be a whole number"),
    ({"limits": {"per_user": 10**12}}, "limits.per_user must be a whole number"),
    ({"limits": [2]}, "limits must be an object"),
    ({"limits": 2}, "limits must be an object"),
    ({"limits": {"per_host": 2}}, "unknown key limits.per_host (allowed: per_user)"),
    # a template field would let each launcher choose their own limit
    ({"limits": {"per_user": "{{n}}"},
      "template_variables": {"n": {"type": "integer", "minimum": 1, "default": 1}}},
     "limits.per_user must be a whole number"),
]  # fmt: skip


def test_bad_limits_are_refused_in_one_line_and_nothing_is_written(lab: Path, home: Path) -> None:
    before = table_counts(home)
    written = cli_json("queue", "show", "lab")["config"]
    for config, message in BAD_LIMITS:
        text = json.dumps(config)
        assert message in refused(LEAD, "queue", "create", "lab2", "--entity", "lab", "-c", text)
        assert message in refused(LEAD, "queue", "edit", "lab", "--config", text)
    assert table_counts(home) == before
    assert cli_json("queue", "show", "lab")["config"] == written


def test_only_the_queue_s_admins_set_its_limits(lab: Path, home: Path) -> None:
    """A member (bob) may launch into the queue but not raise, lower or remove its limit,
    nor make a queue of the team with none; a launch config cannot carry one."""
    before = table_counts(home)
    for config in ('{"limits": {"per_user": 100}}', "{}"):
        assert "bob" in refused(BOB, "queue", "edit", "lab", "--config", config)
    assert "bob" in refused(BOB, "queue", "create", "mine", "--entity", "lab")
    assert "unknown key 'limits'" in refused(
        BOB, "launch", "-q", "lab", "-j", "step", "-c", '{"limits": {"per_user": 100}}'
    )
    assert table_counts(home) == before
    assert cli_json("queue", "show", "lab")["config"]["limits"] == {"per_user": 2}


def test_queue_show_and_list_say_the_limit(lab: Path) -> None:
    shown = cli("queue", "show", "lab", check=True).stdout
    assert "limits:      per_user 2 (each launcher holds at most 2 of its slots)" in shown
    row = next(q for q in cli_json("queue", "list") if q["name"] == "lab")
    assert row["config"]["limits"] == {"per_user": 2}
    assert "limits:" not in cli("queue", "show", "default", check=True).stdout


def test_a_sweep_s_trials_count_against_the_sweep_s_author(
    lab: Path, tmp_path: Path, start_agent: StartAgent
) -> None:
    """alice's sweep queues 4 trials at once (num_workers 4): they are alice's runs (the
    agent's scheduler queues them in her name), so they hold at most 2 slots, and bob's run
    starts beside them."""
    gate = tmp_path / "gate"
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({
        "job": "step", "method": "grid",
        "metric": {"name": "loss", "goal": "minimize"},
        "parameters": {"x": {"values": [1, 2, 3, 4]}, "log": {"value": str(lab)},
                       "gate": {"value": str(gate)}},
        "scheduler": {"num_workers": 4},
    }))  # fmt: skip
    cli("launch-sweep", str(sweep), "-q", "lab", env=ALICE, check=True)
    start_agent("-q", "lab", "-j", "8")

    def trials() -> list[str]:
        return [r["id"] for r in cli_json("runs", "list", "--limit", "0")
                if r["author"] == "alice"]  # fmt: skip

    wait_for(lambda: len(trials()) == 4, what="the sweep to queue 4 trials")
    bob = launch(BOB, lab, gate)
    wait_for(lambda: bob in started(lab) and len(started(lab)) == 3, what="bob's run to start")
    assert sorted(states(trials()).values()) == ["queued", "queued", "running", "running"]
    queued = next(r for r, s in states(trials()).items() if s == "queued")
    assert why(queued) == (
        "alice holds 2 of the 2 slots a user may hold in queue lab (limits.per_user)"
    )
    gate.touch()
    wait_for(lambda: set(states([*trials(), bob]).values()) == {"finished"}, timeout=60,
             what="the trials and bob's run to finish")  # fmt: skip
    assert most_at_once(lab) == {"alice": 2, "bob": 1}
