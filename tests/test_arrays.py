"""Job arrays (issue 18): ``launch --array 0-7%2`` queues 8 runs of one spec, at most 2 in
flight at once, as Slurm's ``sbatch --array=0-7%2``.

The real CLI, real agents (two at once where the throttle is the point), the real store:
every index runs exactly once, the throttle holds across agents (read from the order of
the events the claims and ends wrote), each run sees its own index, the group commands
keep the author/admin rule, and a refused or failed launch writes nothing at all.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from launchctl.errors import NotFound
from launchctl.states import TERMINAL
from launchctl.store import Store
from tests.conftest import StartAgent, cli, cli_json, make_script, table_counts, wait_for

ALICE = {"LAUNCHCTL_USER": "alice"}
BOB = {"LAUNCHCTL_USER": "bob"}
# Prints its index; fails (exit 3) for the odd ones when FAIL_ODD is in its config.
TASK = (
    "import json, os, sys, time\n"
    "i = int(os.environ['LAUNCHCTL_ARRAY_INDEX'])\n"
    "print('index', i, 'of', os.environ['LAUNCHCTL_ARRAY_COUNT'],"
    " 'array', os.environ['LAUNCHCTL_ARRAY_ID'], flush=True)\n"
    "cfg = json.loads(os.environ['WANDB_CONFIG'])\n"
    "time.sleep(cfg.get('sleep', 0))\n"
    "sys.exit(3 if cfg.get('fail_odd') and i % 2 else 0)\n"
)
ENDED = {s.value for s in TERMINAL}


def one_line_error(proc: Any) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    return str(proc.stderr)


def task(tmp_path: Path) -> str:
    return str(make_script(tmp_path / "task", "main.py", TASK).parent)


def shared_queue() -> None:
    """Queue q of team vision: alice its admin, bob a member (not an admin)."""
    cli("team", "create", "vision", env=ALICE, check=True)
    cli("team", "add", "vision", "bob", env=ALICE, check=True)
    cli("queue", "create", "q", "--entity", "vision", env=ALICE, check=True)


def launch_array(
    src: str, spec: str, *args: str, env: dict[str, str] | None = None, queue: str = "q"
) -> str:
    team = ["-e", "vision"] if env else []
    proc = cli("launch", "-q", queue, "-u", src, "-E", "python main.py", "--array", spec,
               "--quiet", *team, *args, env=env, check=True)  # fmt: skip
    array_id = proc.stdout.strip()
    assert array_id.startswith("a-") and proc.stderr == ""
    return array_id


def drain(env: dict[str, str] | None = None) -> None:
    cli("agent", "-q", "q", "--burst", "-j", "4", env=env, check=True, timeout=120)


def most_in_flight(home: Path, run_ids: set[str]) -> int:
    """The most of ``run_ids`` held at once, from the events in the order they were
    written (their ids: one write transaction at a time), a claim counting +1 and an end
    -1: exact whatever the clocks of the agents say."""
    conn = sqlite3.connect(home / "launchctl.db")
    try:
        rows = conn.execute(
            "SELECT run_id, from_state, to_state FROM events ORDER BY id"
        ).fetchall()
    finally:
        conn.close()
    held = most = 0
    for run_id, came, went in rows:
        if run_id not in run_ids or came == went:
            continue
        if went == "claimed":
            held += 1
        elif went in ENDED and came != "queued":
            held -= 1
        most = max(most, held)
    return most


def test_an_array_runs_every_index_once_and_never_more_than_its_limit_under_two_agents(
    store: Store, home: Path, tmp_path: Path, start_agent: StartAgent
) -> None:
    cli("queue", "create", "q", check=True)
    array_id = launch_array(task(tmp_path), "0-7%2", "--set", "sleep=1")
    runs = cli_json("runs", "list", "--array", array_id)
    assert [r["array_index"] for r in runs] == list(range(8))
    assert {(r["array_id"], r["array_limit"], r["state"]) for r in runs} == {
        (array_id, 2, "queued")
    }
    assert len({r["id"] for r in runs}) == len({r["name"] for r in runs}) == 8
    start_agent("-q", "q", "-j", "4")
    start_agent("-q", "q", "-j", "4")
    ids = {r["id"] for r in runs}
    wait_for(
        lambda: {store.runs.state(r) for r in ids} == {"finished"},
        timeout=120,
        what="every run of the array finished",
    )
    assert most_in_flight(home, ids) == 2  # two agents with 8 slots: the %2 held
    for run in runs:
        shown = cli_json("runs", "show", run["id"])
        assert [a["attempt"] for a in shown["attempts"]] == [1]  # claimed once
        log = cli("logs", run["id"], check=True).stdout
        assert f"index {run['array_index']} of 8 array {array_id}" in log


def test_without_a_limit_the_array_fills_the_agents_slots(
    store: Store, home: Path, tmp_path: Path, start_agent: StartAgent
) -> None:
    """The counter-test of the one above: the same runs, no %N, do run 4 at once."""
    cli("queue", "create", "q", check=True)
    array_id = launch_array(task(tmp_path), "0-3", "--set", "sleep=2")
    ids = {r["id"] for r in cli_json("runs", "list", "--array", array_id)}
    start_agent("-q", "q", "-j", "4")
    wait_for(lambda: {store.runs.state(r) for r in ids} == {"finished"}, timeout=120,
             what="the array finished")  # fmt: skip
    assert most_in_flight(home, ids) > 2


def test_steps_lists_and_what_a_launch_prints(store: Store, tmp_path: Path) -> None:
    cli("queue", "create", "q", check=True)
    proc = cli("launch", "-q", "q", "-u", task(tmp_path), "-E", "python main.py",
               "--array", "1,3,10-20:5%1", "--name", "sweep")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    array_id = proc.stdout.strip()
    assert f"queued array {array_id}: 5 runs (1,3,10-20:5), at most 1 at once" in proc.stderr
    runs = store.arrays.runs(array_id)
    assert [r["array_index"] for r in runs] == [1, 3, 10, 15, 20]
    assert {r["name"] for r in runs} == {"sweep"}  # --name is the array's, as sbatch -J
    assert runs[2]["spec"]["array"] == {
        "id": array_id, "index": 10, "count": 5, "min": 1, "max": 20
    }  # fmt: skip
    # --json: every run; a prefix of the id is enough for the group commands.
    listed = cli_json("launch", "-q", "q", "-u", task(tmp_path), "-E", "python main.py",
                      "--array", "0-1")  # fmt: skip
    assert [r["array_index"] for r in listed] == [0, 1]
    assert len(cli_json("runs", "list", "--array", array_id[:5])) == 5
    table = cli("runs", "list", check=True).stdout
    assert f"{array_id}[20]" in table and f"{array_id}[1] " in table
    show = cli("runs", "show", runs[0]["id"], check=True).stdout
    assert f"array:      {array_id} index 1 (of 5, at most 1 at once)" in show


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--array", ""], "invalid --array '': expected indices"),
        (["--array", "7-3"], "the range 7-3 runs backwards"),
        (["--array", "0-9:0"], "the step of 0-9:0 is 0"),
        (["--array", "0-9%0"], "%0 lets no run start"),
        (["--array", "0-10000"], "an array holds at most 10000 runs"),
        (["--array", "0-99999999"], "is not an index or a range"),
        (["--array", "1,2,1-3"], "index 1 is named twice"),
        (["--array", "0- 3"], "is not an index or a range"),
        (["--array", "0-3%x"], "%N takes a whole number"),
        (["--array", "0-3", "--wait"], "cannot use both --array and --wait"),
        (["--array", "0-3", "--after-ok", "a-nothere"], "array 'a-nothere' does not exist"),
        (["--array", "0-3", "-v", "nope=1"], "nope"),
    ],
)
def test_a_bad_array_is_refused_in_one_line_and_writes_nothing(
    home: Path, tmp_path: Path, args: list[str], said: str
) -> None:
    cli("queue", "create", "q", check=True)
    src = task(tmp_path)
    before = table_counts(home)
    proc = cli("launch", "-q", "q", "-u", src, "-E", "python main.py", *args)
    assert said in one_line_error(proc)
    assert table_counts(home) == before


def test_an_array_needs_a_queue(home: Path, tmp_path: Path) -> None:
    src = task(tmp_path)
    for extra in ([], ["--async"]):
        proc = cli("launch", "-u", src, "-E", "python main.py", "--array", "0-3", *extra)
        assert "--array" in one_line_error(proc)
    assert table_counts(home).get("runs", 0) == 0


def test_an_array_is_written_in_one_transaction_all_or_none(store: Store, home: Path) -> None:
    """The store's insert: a later run that cannot be written (its dependency deleted
    since the launch checked it) leaves none of the earlier ones behind."""
    cli("queue", "create", "q", check=True)
    queue = store.queues.get("q")
    rows = [
        {"id": f"arr0000{i}", "queue_id": queue["id"], "queue_name": "q", "name": f"t{i}",
         "project": "p", "entity": "e", "resource": "local-process", "priority": 2,
         "spec": {"author": "alice"}, "array_id": "a-test0001", "array_index": i,
         "array_limit": 2}
        for i in range(4)
    ]  # fmt: skip
    rows[3]["after"] = [("gone0000", "ok")]
    before = table_counts(home)
    with pytest.raises(NotFound):
        store.arrays.insert(rows)
    assert table_counts(home) == before
    rows[3].pop("after")
    assert [r["array_index"] for r in store.arrays.insert(rows)] == [0, 1, 2, 3]


def test_cancel_array_is_refused_to_another_user_and_stops_every_run_for_its_author(
    store: Store, home: Path, tmp_path: Path, start_agent: StartAgent,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    shared_queue()
    array_id = launch_array(task(tmp_path), "0-3%1", "--set", "sleep=300", env=ALICE)
    runs = cli_json("runs", "list", "--array", array_id)
    monkeypatch.setenv("LAUNCHCTL_USER", "alice")  # the team's agent
    start_agent("-q", "q", "-j", "4")
    monkeypatch.delenv("LAUNCHCTL_USER")
    first = runs[0]["id"]
    wait_for(lambda: store.runs.state(first) == "running", timeout=60, what="index 0 running")
    before = table_counts(home)
    proc = cli("runs", "cancel", "--array", array_id, env=BOB)
    assert proc.returncode == 1 and proc.stdout == ""
    refusals = proc.stderr.splitlines()
    assert len(refusals) == 4 and "Traceback" not in proc.stderr  # one line per run
    assert sorted(line.split(" run ")[1].split(":")[0] for line in refusals) == sorted(
        r["id"] for r in runs
    )
    assert all("user 'bob' may not cancel run" in line for line in refusals)
    assert table_counts(home) == before
    assert store.runs.state(first) == "running"
    mine = cli("runs", "cancel", "--array", array_id, env=ALICE)
    assert mine.returncode == 0, mine.stderr
    assert mine.stdout.splitlines() == [
        *(f"run {r['id']} stopped" for r in runs[1:]),  # the queued ones first
        f"run {first} is running; its agent is stopping it",
    ]
    wait_for(lambda: {store.runs.state(r["id"]) for r in runs} == {"stopped"}, timeout=60,
             what="every run stopped")  # fmt: skip
    again = cli("runs", "cancel", "--array", array_id, env=ALICE)
    assert again.stdout == f"array {array_id} has no unfinished runs\n"


def test_rerun_array_failed_makes_a_new_array_of_the_failed_runs_with_the_same_limit(
    store: Store, tmp_path: Path
) -> None:
    cli("queue", "create", "q", check=True)
    old = launch_array(task(tmp_path), "0-5%3", "--set", "fail_odd=true")
    drain()
    olds = {r["array_index"]: r for r in cli_json("runs", "list", "--array", old)}
    assert [olds[i]["state"] for i in range(6)] == ["finished", "failed"] * 3
    proc = cli("runs", "rerun", "--array", old, "--failed")
    assert proc.returncode == 0, proc.stderr
    new = proc.stdout.strip()
    assert new.startswith("a-") and new != old
    reruns = store.arrays.runs(new)
    assert [r["array_index"] for r in reruns] == [1, 3, 5]
    assert [r["rerun_of"] for r in reruns] == [olds[i]["id"] for i in (1, 3, 5)]
    assert {r["array_limit"] for r in reruns} == {3}
    assert reruns[0]["spec"]["array"] == {"id": new, "index": 1, "count": 3, "min": 1, "max": 5}
    drain()
    log = cli("logs", reruns[1]["id"], check=True).stdout
    assert f"index 3 of 3 array {new}" in log  # the new array's facts, its old index
    # The originals already have their reruns: not again; the whole array still may be.
    assert "no failed run without a rerun" in one_line_error(
        cli("runs", "rerun", "--array", old, "--failed")
    )
    whole = cli_json("runs", "rerun", "--array", old)
    assert [r["array_index"] for r in whole] == list(range(6))
    assert len({r["array_id"] for r in whole}) == 1


def test_rerun_array_is_refused_to_another_user_and_writes_nothing(
    store: Store, home: Path, tmp_path: Path
) -> None:
    shared_queue()
    old = launch_array(task(tmp_path), "0-1", "--set", "fail_odd=true", env=ALICE)
    drain(env=ALICE)
    before = table_counts(home)
    proc = cli("runs", "rerun", "--array", old, "--failed", env=BOB)
    assert "user 'bob' may not rerun run" in one_line_error(proc)
    assert table_counts(home) == before


def test_after_an_array_waits_for_every_run_of_it(store: Store, home: Path, tmp_path: Path) -> None:
    """Slurm's afterok:<array job>: the run waits for all of the array's runs."""
    cli("queue", "create", "q", check=True)
    src = task(tmp_path)
    array_id = launch_array(src, "0-2%1")
    ids = {r["id"] for r in store.arrays.runs(array_id)}
    proc = cli("launch", "-q", "q", "-u", src, "-E", "python -c pass", "--after-ok", array_id,
               check=True)  # fmt: skip
    after = proc.stdout.strip()
    waits = cli_json("runs", "show", after)["after"]
    assert {w["run"] for w in waits} == ids and {w["kind"] for w in waits} == {"ok"}
    drain()
    assert store.runs.state(after) == "finished"
    events = store.runs.events()
    claimed = next(e["id"] for e in events if e["run_id"] == after and e["to_state"] == "claimed")
    ends = [e["id"] for e in events if e["run_id"] in ids and e["to_state"] in ENDED]
    assert len(ends) == 3 and max(ends) < claimed
    # An array with a failed run can never satisfy --after-ok: refused, nothing written.
    failing = launch_array(src, "0-1", "--set", "fail_odd=true")
    drain()
    before = table_counts(home)
    refused = cli("launch", "-q", "q", "-u", src, "-E", "python -c pass", "--after-ok", failing)
    assert "--after-ok can never hold" in one_line_error(refused)
    assert table_counts(home) == before


def test_after_another_users_array_is_refused(store: Store, home: Path, tmp_path: Path) -> None:
    """bob, not of alice's team, may not make his run wait on her array (its state would
    tell him how her runs go)."""
    shared_queue()
    cli("queue", "create", "bobs", env=BOB, check=True)
    src = task(tmp_path)
    array_id = launch_array(src, "0-1", env=ALICE)
    cli("team", "remove", "vision", "bob", env=ALICE, check=True)
    before = table_counts(home)
    proc = cli("launch", "-q", "bobs", "-u", src, "-E", "python -c pass", "--after", array_id,
               env=BOB)  # fmt: skip
    assert "user 'bob' may not wait for run" in one_line_error(proc)
    assert table_counts(home) == before


@pytest.mark.parametrize(
    "argv",
    [
        ["runs", "list", "--array", "3kx9q2ab"],
        ["runs", "list", "--array", "a-x", "-q", "q"],
        ["runs", "cancel", "--array", "a-nothere"],
        ["runs", "cancel", "abc", "--array", "a-x"],
        ["runs", "rerun", "--array", "a-nothere"],
        ["runs", "rerun", "--array", "a-x", "--dry-run"],
    ],
)
def test_group_commands_refuse_what_names_no_array(home: Path, argv: list[str]) -> None:
    cli("queue", "create", "q", check=True)
    before = table_counts(home)
    one_line_error(cli(*argv))
    assert table_counts(home) == before


def test_launch_json_and_quiet_do_not_mix(home: Path, tmp_path: Path) -> None:
    cli("queue", "create", "q", check=True)
    proc = cli("launch", "-q", "q", "-u", task(tmp_path), "-E", "python main.py",
               "--array", "0-1", "--quiet", "--json")  # fmt: skip
    assert "--quiet" in one_line_error(proc)
    assert json.loads(cli("runs", "list", "--json").stdout) == []


def test_the_index_reaches_the_command_through_sh_c_and_delay_holds_every_run(
    store: Store, tmp_path: Path
) -> None:
    """-E is not run through a shell: ``sh -c`` puts the index into the command line."""
    cli("queue", "create", "q", check=True)
    src = task(tmp_path)
    array_id = launch_array(src, "4-5", "-E", "sh -c 'echo seed=$LAUNCHCTL_ARRAY_INDEX'")
    drain()
    for run in store.arrays.runs(array_id):
        assert f"seed={run['array_index']}" in cli("logs", run["id"], check=True).stdout
    later = launch_array(src, "0-2", "--delay", "1h", "-P", "high")
    runs = store.arrays.runs(later)
    assert all(r["not_before"] and r["priority"] == runs[0]["priority"] for r in runs)
    listed = cli_json("runs", "list", "--array", later)
    assert all(r["eligible_at"] and r["priority"] == "high" for r in listed)
    assert not store.runs.has_queued([runs[0]["queue_id"]])  # no claim may take them yet


def test_a_launch_spec_cannot_claim_to_be_part_of_an_array(home: Path, tmp_path: Path) -> None:
    """Only launch --array writes a run's array facts: a -c spec naming one is refused, so
    no run can pose as another user's array (or take a slot of its %N)."""
    cli("queue", "create", "q", check=True)
    before = table_counts(home)
    spec = {"array": {"id": "a-someone", "index": 0, "count": 1, "min": 0, "max": 0}}
    proc = cli("launch", "-q", "q", "-u", task(tmp_path), "-E", "python main.py",
               "-c", json.dumps(spec))  # fmt: skip
    assert "unknown key 'array'" in one_line_error(proc)
    assert table_counts(home) == before


def test_two_rerun_array_failed_at_once_make_one_new_array(store: Store, tmp_path: Path) -> None:
    """The check that an original has no rerun yet is made again in the new array's own
    transaction: two commands at the same moment never rerun the failed runs twice."""
    from concurrent.futures import ThreadPoolExecutor

    cli("queue", "create", "q", check=True)
    old = launch_array(task(tmp_path), "0-7", "--set", "fail_odd=true")
    drain()
    with ThreadPoolExecutor(2) as pool:
        procs = list(pool.map(lambda _: cli("runs", "rerun", "--array", old, "--failed"), [0, 1]))
    assert sorted(p.returncode for p in procs) == [0, 1], [p.stderr for p in procs]
    refused = next(p for p in procs if p.returncode)
    assert ("no failed run without a rerun" in refused.stderr) or (
        "was rerun by another command just now" in refused.stderr
    )
    new = next(p for p in procs if not p.returncode).stdout.strip()
    failed = [r["id"] for r in store.arrays.runs(old) if r["state"] == "failed"]
    assert len(failed) == 4
    assert store.runs.reruns_of(failed) == {
        r["rerun_of"]: r["id"] for r in store.arrays.runs(new)
    }  # fmt: skip
    assert len(store.arrays.runs(new)) == 4
