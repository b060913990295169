"""Issue 17: what the agent does faster for trivial runs keeps every guarantee.

- A job version's snapshot is unpacked once per agent and kept in memory; each run gets a
  fresh working copy written from it. A run that rewrites, replaces, links or adds files
  in its copy changes nothing the next run of the same version gets.
- The wrapper shell writes the exit code itself, with no rm or mv: a run that plants a
  link where its exit code goes gets no write through it, and an earlier attempt's files
  never stand for the next attempt's.
- One reaper thread follows every run's process (a pidfd each); without pidfds each run
  has its threads as before: either way a run ends with its code, its log drained.
- A claim reads the first few waiting runs, and the rest of its scan only when it passes
  over all of them: it takes the run one read of the whole scan would have taken.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from launchctl import jobfiles
from launchctl.agent import Agent, AgentOptions, loop, starter
from launchctl.errors import NotFound
from launchctl.runners import local_process
from launchctl.runners.base import Exit, Launch
from launchctl.runners.local_process import EXIT_FILE, PID_FILE, LocalProcessRunner, wrap
from launchctl.store import Store
from launchctl.store.runs import CLAIM_PAGE
from tests.conftest import cli, cli_json, make_script, wait_for

# Prints what it was given, then does its worst to its working copy: a file rewritten
# in place, one made read-only to stop a fresh write, one replaced by a link out of the
# job, a folder replaced by a link, a new file, and a link placed where the exit code goes.
ATTACKER = """\
import os, pathlib, sys
print("data:", pathlib.Path("data.txt").read_text().strip())
print("sub:", pathlib.Path("sub/inner.txt").read_text().strip())
print("extra:", os.path.exists("extra.txt"))
print("links:", sorted(p for p in os.listdir(".") if os.path.islink(p)))
with open("data.txt", "a") as fh:
    fh.write("tampered\\n")
os.chmod("data.txt", 0o400)
os.unlink("other.txt")
os.symlink(sys.argv[1], "other.txt")
os.rename("sub", "sub-moved")
os.symlink(sys.argv[1], "sub")
pathlib.Path("extra.txt").write_text("left for the next run\\n")
os.symlink(sys.argv[1], "../exit_code")
"""


def test_a_run_cannot_change_the_working_copy_the_next_run_of_its_version_gets(
    tmp_path: Path,
) -> None:
    code = tmp_path / "code"
    make_script(code, "attack.py", ATTACKER)
    (code / "data.txt").write_text("original\n")
    (code / "other.txt").write_text("other\n")
    make_script(code / "sub", "inner.txt", "inner\n")
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    entry = f"{sys.executable} attack.py {victim}"
    cli("job", "create", "code", str(code), "-E", entry, "-n", "attacker", check=True)
    ids = [cli_json("launch", "-j", "attacker", "-q", "default")["id"] for _ in range(3)]
    # One agent (so one cache) runs the three, one after another.
    cli("agent", "-q", "default", "-j", "1", "--burst", check=True, timeout=120)
    for run_id in ids:
        run = cli_json("runs", "show", run_id)
        assert run["state"] == "finished", run
        log = cli("logs", run_id, check=True).stdout
        assert "data: original" in log and "tampered" not in log
        assert "sub: inner" in log
        assert "extra: False" in log
        assert "links: []" in log
        folder = Path(run["log_path"]).parent
        # Its own exit code was not written through the link it left there.
        assert os.path.islink(folder / EXIT_FILE)
    assert victim.read_text() == "untouched\n"


def test_the_wrapper_writes_no_exit_code_through_a_link_and_leaves_none_stale(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    # The run plants a link where its exit code goes: the shell does not write through it.
    plant = f"import os; os.symlink({str(victim)!r}, {str(folder / EXIT_FILE)!r})"
    import subprocess

    done = subprocess.run(wrap([sys.executable, "-c", plant], folder, None), check=False)
    assert done.returncode == 0
    assert victim.read_text() == "untouched\n"
    assert int((folder / PID_FILE).read_text()) > 0
    # A run with no link gets its code written, whole.
    (folder / EXIT_FILE).unlink()
    done = subprocess.run(wrap([sys.executable, "-c", "raise SystemExit(5)"], folder, None))
    assert done.returncode == 5
    assert (folder / EXIT_FILE).read_text() == "5\n"


def test_a_claim_reads_a_few_waiting_runs_first_and_the_rest_only_when_it_passes_them(
    store: Store,
) -> None:
    ids = [f"r{i}" for i in range(CLAIM_PAGE + 3)]
    for run_id in ids:
        store.runs.insert(
            {"id": run_id, "queue_id": 1, "queue_name": "default", "job_version_id": None,
             "name": f"n-{run_id}", "project": "p", "entity": "e",
             "resource": "local-process", "spec": {}, "priority": 2}
        )  # fmt: skip
    seen: list[list[str]] = []

    def first_fit(skip: set[str]) -> Any:
        def choose(_queue: dict[str, Any], rows: list[dict[str, Any]]) -> str | None:
            seen.append([r["id"] for r in rows])
            return next((str(r["id"]) for r in rows if r["id"] not in skip), None)

        return choose

    # The first waiting run fits: only the first page is read.
    assert store.runs.claim_first(1, "agent-1", 30, first_fit(set()))["id"] == "r0"  # type: ignore[index]
    assert seen == [ids[:CLAIM_PAGE]]
    # None of the first page fits: the rest of the scan is read, in claim order, and the
    # first that fits is taken, as one read of the whole scan would have taken it.
    seen.clear()
    skip = set(ids[1 : CLAIM_PAGE + 2])
    got = store.runs.claim_first(1, "agent-1", 30, first_fit(skip))
    assert got is not None and got["id"] == ids[CLAIM_PAGE + 2]
    assert seen == [ids[1 : CLAIM_PAGE + 1], ids[CLAIM_PAGE + 1 :]]
    # No run fits within ``scan``: nothing is claimed.
    assert store.runs.claim_first(1, "agent-1", 30, first_fit(set(ids)), scan=5) is None
    assert [store.runs.state(i) for i in ids].count("queued") == len(ids) - 2


def _launch(tmp_path: Path, command: list[str], ended: list[str], secrets: list[str]) -> Launch:
    name = tmp_path.name
    return Launch(run={"id": name}, entrypoint=command, args=[],
                  env={**os.environ, "LAUNCHCTL_RUN_ID": name}, workdir=tmp_path,
                  log_path=tmp_path / "run" / "output.log", secrets=secrets,
                  on_exit=lambda: ended.append(name))  # fmt: skip


@pytest.mark.parametrize("shared", [True, False], ids=["one reaper", "threads per run"])
def test_runs_end_with_their_code_and_stop_with_or_without_the_shared_reaper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared: bool
) -> None:
    if not shared:  # as on a machine without pidfds (macOS, Linux before 5.3)
        monkeypatch.setattr(local_process, "reaper", lambda: None)
    elif local_process.reaper() is None:
        pytest.skip("no pidfds on this machine: only the fallback runs here")
    ended: list[str] = []
    runner = LocalProcessRunner()

    def start(name: str, command: list[str], secrets: list[str] | None = None) -> Any:
        (tmp_path / name).mkdir()
        return runner.start(_launch(tmp_path / name, command, ended, secrets or []))

    quick = start("quick", [sys.executable, "-c", "exit(3)"])
    # With a secret: its output goes through the copier, drained before the end is told.
    said = "print('the value is s3cret', flush=True); exit(0)"
    masked = start("masked", [sys.executable, "-c", said], ["s3cret"])
    slow = start("slow", ["sleep", "600"])
    assert wait_for(quick.poll, what="the quick run") == Exit(code=3)
    assert wait_for(masked.poll, what="the masked run") == Exit(code=0)
    assert (tmp_path / "masked" / "run" / "output.log").read_text() == "the value is ***\n"
    assert slow.poll() is None and sorted(ended) == ["masked", "quick"]
    slow.stop(grace_s=600)  # sleep dies of the SIGTERM: no SIGKILL needed
    assert wait_for(slow.poll, what="the stopped run") == Exit(
        code=143, message="exit code 143 (that of a process killed by SIGTERM)"
    )
    assert sorted(ended) == ["masked", "quick", "slow"]  # each end told once


def test_the_cancel_check_before_a_start_reads_the_flag_of_that_run(store: Store) -> None:
    for run_id in ("r1", "r2"):
        store.runs.insert(
            {"id": run_id, "queue_id": 1, "queue_name": "default", "job_version_id": None,
             "name": f"n-{run_id}", "project": "p", "entity": "e",
             "resource": "local-process", "spec": {}, "priority": 2},
            claim_for="agent-1", lease_s=30,
        )  # fmt: skip
    assert store.runs.cancel_requested("r1") is False
    store.runs.request_cancel("r2")
    assert store.runs.cancel_requested("r2") is True
    assert store.runs.cancel_requested("r1") is False
    with pytest.raises(NotFound):
        store.runs.cancel_requested("r3")


@pytest.mark.parametrize("small", [True, False], ids=["small snapshot", "large snapshot"])
@pytest.mark.parametrize("kept", [True, False], ids=["snapshot kept", "snapshot too big to keep"])
def test_runs_of_a_version_started_quickly_before_start_in_the_agents_loop(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kept: bool, small: bool
) -> None:
    """The first run of a job version with a large snapshot starts in a worker thread (it
    unpacks the snapshot); with a small one (loop.SMALL_SNAPSHOT) in the loop. The next
    ones, with the snapshot kept, start in the loop; a snapshot this agent does not keep
    (over its share of the cache) sends every later run to a worker, as a build or a
    clone would. Either way every run ends with its own output."""
    monkeypatch.setattr(jobfiles, "LAYOUTS", jobfiles.LayoutCache(0 if not kept else 1 << 26))
    if not small:
        monkeypatch.setattr(loop, "SMALL_SNAPSHOT", 0)
    code = tmp_path / "code"
    make_script(code, "main.py", "import os; print('run', os.environ['LAUNCHCTL_RUN_ID'])\n")
    cli("job", "create", "code", str(code), "-E", "python main.py", "-n", "quick", check=True)
    ids = [cli_json("launch", "-j", "quick", "-q", "default")["id"] for _ in range(4)]
    threads: list[str] = []
    real = starter.Starter.prepare

    def prepare(self: starter.Starter, run: dict[str, Any], **kw: Any) -> starter.Ready:
        threads.append(threading.current_thread().name)
        return real(self, run, **kw)

    monkeypatch.setattr(starter.Starter, "prepare", prepare)
    agent = Agent(store, ["default"], AgentOptions(max_jobs=1), say=lambda _l: None)
    agent.start()
    agent.run(burst=True)
    main = threading.main_thread().name
    assert len(threads) == 4 and (threads[0] == main) == small
    if kept:
        assert threads[1:] == [main] * 3
    else:
        assert main not in threads[1:]
    for run_id in ids:
        run = store.runs.get(run_id)
        assert run["state"] == "finished", run
        assert Path(run["log_path"]).read_text() == f"run {run_id}\n"
        events = [(e["from_state"], e["to_state"]) for e in store.runs.events(run_id)]
        assert events == [(None, "queued"), ("queued", "claimed"), ("claimed", "starting"),
                          ("starting", "running"), ("running", "finished")]  # fmt: skip


def test_a_quick_run_that_cannot_start_fails_saying_why_and_the_next_one_runs(
    store: Store, tmp_path: Path
) -> None:
    """A run started in the loop that fails before its process (its claim and the failure
    commit together) or at its process's start (after its move to starting) ends failed,
    saying why, with its events in order; the agent goes on to the next run."""
    code = tmp_path / "code"
    make_script(code, "main.py", "print('ok')\n")
    cli("job", "create", "code", str(code), "-E", "python main.py", "-n", "q", check=True)
    first = cli_json("launch", "-j", "q", "-q", "default")["id"]
    missing = cli_json("launch", "-j", "q", "-q", "default", "-E", "no-such-program-xyz")["id"]
    last = cli_json("launch", "-j", "q", "-q", "default")["id"]
    agent = Agent(store, ["default"], AgentOptions(max_jobs=1), say=lambda _l: None)
    agent.start()
    agent.run(burst=True)
    assert store.runs.get(first)["state"] == "finished"
    failed = store.runs.get(missing)
    assert failed["state"] == "failed" and "command not found: no-such-program-xyz" in (
        failed["reason"] or ""
    ), failed
    moves = [(e["from_state"], e["to_state"]) for e in store.runs.events(missing)]
    assert moves == [(None, "queued"), ("queued", "claimed"), ("claimed", "starting"),
                     ("starting", "failed")]  # fmt: skip
    assert store.runs.get(last)["state"] == "finished"
    assert not store.db.conn.in_transaction


def test_a_run_started_in_the_loop_is_recorded_running_soon_with_nothing_else_to_do(
    store: Store, tmp_path: Path, home: Path
) -> None:
    """A run started in the loop has its move to running made in the loop's next commit,
    and in one of its own within a fraction of a second when no other commit comes (not
    at the next fallback poll, here half a minute away). Its pid is recorded, then a
    cancel stops it."""
    code = tmp_path / "code"
    make_script(code, "main.py", "import sys, time\nif sys.argv[1:] == ['long']: time.sleep(120)\n")
    cli("job", "create", "code", str(code), "-E", "python main.py", "-n", "s", check=True)
    first = cli_json("launch", "-j", "s", "-q", "default")["id"]
    agent = Agent(store, ["default"], AgentOptions(max_jobs=1, fallback_poll_s=30),
                  say=lambda _l: None)  # fmt: skip
    agent.start()
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    view = Store(home)  # the store as another process sees it
    try:
        wait_for(lambda: view.runs.state(first) == "finished", what="the first run", timeout=60)
        second = cli_json("launch", "-j", "s", "-q", "default", "-E", "python main.py long")["id"]
        wait_for(lambda: view.runs.state(second) == "running", what="running", timeout=10)
        run = view.runs.get(second)
        assert run["pid"] and run["pid_started"] and run["started_at"]
        assert second in agent.active and not agent.starting  # it started in the loop
        view.runs.request_cancel(second)
        wait_for(lambda: view.runs.state(second) == "stopped", what="the cancel", timeout=30)
    finally:
        agent.stop_all()
        thread.join(timeout=60)
    assert not thread.is_alive()
    events = view.runs.events(second)
    moves = [(e["from_state"], e["to_state"]) for e in events if e["from_state"] != e["to_state"]]
    assert moves == [(None, "queued"), ("queued", "claimed"), ("claimed", "starting"),
                     ("starting", "running"), ("running", "stopped")], events  # fmt: skip


def test_a_drain_of_quick_trivial_runs_commits_about_twice_a_run(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17: a quick run's claim and its move to starting share one commit, and its
    end and its move to running (when still owed) another; the loop's other passes add
    none. (The next run's claim commits before an end is recorded, so its process starts
    sooner: see ``Agent.reap``.)"""
    code = tmp_path / "code"
    make_script(code, "data.txt", "x\n")
    cli("job", "create", "code", str(code), "-E", "true", "-n", "t", check=True)
    ids = [cli_json("launch", "-j", "t", "-q", "default")["id"] for _ in range(12)]
    # A run here may outlive the 20 ms its move to running waits for another commit (a
    # loaded machine): with a longer wait, that move always rides along, as it does for
    # runs this short on an idle one.
    monkeypatch.setattr(loop, "ANNOUNCE_S", 10.0)
    agent = Agent(store, ["default"], AgentOptions(max_jobs=1), say=lambda _l: None)
    agent.start()
    commits = 0
    real = type(store.db)._transaction

    def counted(db: Any) -> Any:
        nonlocal commits
        if db is store.db:
            commits += 1
        return real(db)

    monkeypatch.setattr(type(store.db), "_transaction", counted)
    agent.run(burst=True)
    assert [store.runs.state(r) for r in ids] == ["finished"] * 12
    # 12 runs: the first starts in a worker (its own connection), the 11 others in the
    # loop. Four moves each would be 48 commits; two a run is 24, and a few more where a
    # pass finds nothing to claim.
    assert commits <= 24 + 4, commits


def test_a_refilled_slot_is_said_after_the_end_that_freed_it(store: Store, tmp_path: Path) -> None:
    """Issue 17: the loop starts the next run before it records the end of the run whose
    slot it takes (``Agent.reap``); what the agent says keeps the order things happened
    in: with ``-j 1`` each run's end comes before the next run's start."""
    code = tmp_path / "code"
    make_script(code, "data.txt", "x\n")
    cli("job", "create", "code", str(code), "-E", "true", "-n", "t", check=True)
    ids = [cli_json("launch", "-j", "t", "-q", "default")["id"] for _ in range(4)]
    proc = cli("agent", "-q", "default", "-j", "1", "--burst", check=True)
    said = [
        ("start", line.split()[2]) if line.startswith("started run ") else ("end", line.split()[1])
        for line in proc.stderr.splitlines()
        if line.startswith("started run ") or line.endswith("finished (exit code 0)")
    ]
    assert said == [(kind, run_id) for run_id in ids for kind in ("start", "end")], proc.stderr
    assert [store.runs.state(r) for r in ids] == ["finished"] * 4


def test_runs_prepared_ahead_never_run_more_than_max_jobs_at_once(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17: while its runs are short the agent claims and prepares a slot's next run
    while the slot's run runs (``AHEAD_RUN_S``); each run's process still starts only
    once a slot is free. Each run notes when it began and ended, from inside itself: no
    moment has more than max_jobs of them."""
    monkeypatch.setattr(loop, "AHEAD_RUN_S", 60.0)  # every run here counts as short
    spans = tmp_path / "spans.txt"
    code = tmp_path / "code"
    make_script(
        code,
        "main.py",
        "import time\n"
        f"with open({str(spans)!r}, 'a') as f: f.write(f's {{time.time()}}\\n')\n"
        "time.sleep(0.02)\n"
        f"with open({str(spans)!r}, 'a') as f: f.write(f'e {{time.time()}}\\n')\n",
    )
    cli("job", "create", "code", str(code), "-E", "python main.py", "-n", "p", check=True)
    ids = [cli_json("launch", "-j", "p", "-q", "default")["id"] for _ in range(16)]
    holds = 0
    real = Agent._hold_next

    def counted(self: Agent) -> None:
        nonlocal holds
        real(self)
        holds += self._ahead is not None

    monkeypatch.setattr(Agent, "_hold_next", counted)
    agent = Agent(store, ["default"], AgentOptions(max_jobs=2), say=lambda _l: None)
    agent.start()
    agent.run(burst=True)
    assert [store.runs.state(r) for r in ids] == ["finished"] * 16
    assert holds >= 4, holds  # it did prepare runs ahead
    events = sorted(
        (float(at), 1 if kind == "s" else -1)
        for kind, at in (line.split() for line in spans.read_text().splitlines())
    )
    assert len(events) == 32
    running = peak = 0
    for _at, step in events:
        running += step
        peak = max(peak, running)
    assert peak <= 2, peak


def _wait_until_held(view: Store, busy: list[str], held: str) -> None:
    """Until the runs ``busy`` take both slots and the agent holds ``held`` for the next."""
    wait_for(
        lambda: (
            all(view.runs.state(r) == "running" for r in busy)
            and view.runs.state(held) == "starting"
        ),
        what="both slots busy and the next run held",
        timeout=60,
    )


@pytest.mark.parametrize("how", ["no slot in time", "cancelled", "agent stops", "queue paused"])
def test_a_run_held_for_a_slot_never_starts_without_one(
    store: Store, tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Issue 17: the run an agent holds ahead for its next free slot (claimed, laid out,
    moved to starting) goes back to its queue when no slot frees for it within
    AHEAD_HOLD_S, or when the agent stops; cancelled, it ends stopped. It never starts a
    process meanwhile, and a requeued one runs once a slot frees."""
    monkeypatch.setattr(loop, "AHEAD_RUN_S", 60.0)  # the quick runs here count as short
    monkeypatch.setattr(loop, "AHEAD_HOLD_S", 0.5 if how == "no slot in time" else 600.0)
    code = tmp_path / "code"
    make_script(code, "main.py", "import sys, time\nif sys.argv[1:] == ['long']: time.sleep(120)\n")
    cli("job", "create", "code", str(code), "-E", "python main.py", "-n", "s", check=True)
    for _ in range(6):
        cli_json("launch", "-j", "s", "-q", "default")
    longs = [
        cli_json("launch", "-j", "s", "-q", "default", "-E", "python main.py long")["id"]
        for _ in range(2)
    ]
    held = cli_json("launch", "-j", "s", "-q", "default")["id"]
    said: list[str] = []
    agent = Agent(store, ["default"], AgentOptions(max_jobs=2, fallback_poll_s=30),
                  say=said.append)  # fmt: skip
    agent.start()
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    view = Store(home)  # the store as another process sees it
    try:
        _wait_until_held(view, longs, held)
        assert view.runs.get(held)["pid"] is None
        if how == "cancelled":
            view.runs.request_cancel(held)
            wait_for(lambda: view.runs.state(held) == "stopped", what="the cancel", timeout=30)
            assert view.runs.get(held)["reason"] == "cancelled"
        elif how == "agent stops":
            agent.drain()
            wait_for(lambda: view.runs.state(held) == "queued", what="given back", timeout=30)
        elif how == "queue paused":  # by another process, then a slot frees
            cli("queue", "pause", "default", check=True)
            view.runs.request_cancel(longs[0])
            wait_for(lambda: view.runs.state(held) == "queued", what="given back", timeout=30)
        else:
            wait_for(lambda: view.runs.state(held) == "queued", what="given back", timeout=30)
            view.runs.request_cancel(longs[0])  # a slot frees: the requeued run takes it
            wait_for(lambda: view.runs.state(held) == "finished", what="its run", timeout=60)
    finally:
        for _ in range(2):  # as two signals would: the loop stops everything itself
            agent.signalled()
        thread.join(timeout=60)
    assert not thread.is_alive()
    moves = [(e["from_state"], e["to_state"], e["message"]) for e in view.runs.events(held)
             if e["from_state"] != e["to_state"]]  # fmt: skip
    ran = [m for m in moves if m[1] == "running"]
    if how == "cancelled":
        assert moves[-1][:2] == ("starting", "stopped") and not ran, moves
        assert any("stopped before it started (cancelled)" in line for line in said), said
    else:
        back = [m for m in moves if m[:2] == ("starting", "queued")]
        why = {
            "no slot in time": "no slot freed for it within 0.5 s",
            "agent stops": "the agent stopped before a slot freed for it",
            "queue paused": "its queue was paused while it waited for a slot",
        }[how]
        assert len(back) == 1 and back[0][2] == f"requeued: {why}", moves
        assert len(ran) == (1 if how == "no slot in time" else 0), moves


def test_a_run_held_for_a_slot_goes_back_when_the_loop_itself_fails(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17: should the agent's loop itself fail (a bug) while it holds a run for its
    next slot, that run goes back to its queue on the way out, never started."""
    monkeypatch.setattr(loop, "AHEAD_RUN_S", 60.0)  # every run here counts as short
    code = tmp_path / "code"
    make_script(code, "main.py", "pass\n")
    cli("job", "create", "code", str(code), "-E", "python main.py", "-n", "q", check=True)
    ids = [cli_json("launch", "-j", "q", "-q", "default")["id"] for _ in range(12)]
    real = Agent.next_wake

    def failing(self: Agent) -> float:
        if self._ahead is not None:
            raise RuntimeError("a bug in the loop")
        return real(self)

    monkeypatch.setattr(Agent, "next_wake", failing)
    agent = Agent(store, ["default"], AgentOptions(max_jobs=2), say=lambda _l: None)
    agent.start()
    with pytest.raises(RuntimeError, match="a bug in the loop"):
        agent.run(burst=True)
    why = "requeued: the agent stopped before a slot freed for it"
    back = [r for r in ids if any(e["message"] == why for e in store.runs.events(r))]
    assert len(back) == 1 and store.runs.state(back[0]) == "queued", back
    assert store.runs.get(back[0])["pid"] is None


def test_a_run_held_for_a_slot_when_its_agent_is_killed_runs_once_after(
    store: Store, tmp_path: Path, home: Path
) -> None:
    """Issue 17: an agent SIGKILLed while it holds a run for its next slot (claimed, laid
    out, `starting`, no process) leaves it to the next agent, which takes it over and
    runs it: every run of the queue runs exactly once (each notes its id in a ledger),
    the two running ones adopted, the held one started anew."""
    import signal
    import subprocess
    from collections import Counter

    ledger = tmp_path / "ledger"
    code = tmp_path / "code"
    script = f'echo "$LAUNCHCTL_RUN_ID" >> {ledger}\nif [ "$1" = long ]; then sleep 4; fi\n'
    make_script(code, "run.sh", script)
    cli("job", "create", "code", str(code), "-E", "sh run.sh", "-n", "m", check=True)
    quick = [cli_json("launch", "-j", "m", "-q", "default")["id"] for _ in range(6)]
    longs = [cli_json("launch", "-j", "m", "-q", "default", "-E", "sh run.sh long")["id"]
             for _ in range(2)]  # fmt: skip
    held = cli_json("launch", "-j", "m", "-q", "default")["id"]
    # The agent command itself, in a process of its own, with every run counted short.
    first = subprocess.Popen(
        [sys.executable, "-c", "import sys; from launchctl.agent import loop;"
         " loop.AHEAD_RUN_S = 60.0; from launchctl.cli import main;"
         " sys.argv = ['launchctl', 'agent', '-q', 'default', '-j', '2']; main()"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_until_held(store, longs, held)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    second = cli("agent", "-q", "default", "-j", "2", "--burst", "--resume-queues", timeout=120)
    assert second.returncode == 0, second.stderr
    ids = [*quick, *longs, held]
    assert [store.runs.state(r) for r in ids] == ["finished"] * len(ids), second.stderr
    assert Counter(ledger.read_text().split()) == Counter(ids)  # each ran once
    moves = [e["to_state"] for e in store.runs.events(held) if e["from_state"] != e["to_state"]]
    assert moves.count("running") == 1 and moves.count("claimed") == 2, moves
