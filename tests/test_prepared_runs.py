"""Issue 17: an agent whose runs end quickly prepares the next run per slot ahead.

While every slot runs a run, it claims the next one and lays out its folder, log and
working copy, so a freed slot costs only the STARTING move, the process and RUNNING. A
prepared run is CLAIMED and held by the agent, and every guarantee of a held run holds:

- the first SIGTERM (drain) puts it back in its queue at once, in its place;
- a cancel ends it at once (stopped, cancelled), and it never runs;
- it waits at most ``LAUNCHCTL_HOLD_READY_S`` (1 s) for a slot, then goes back to its
  queue in its place, where another agent takes it: an agent busy with a long run keeps
  no work from an idle one;
- SIGKILLed at any moment, the agent leaves it to lease expiry and adoption: every run
  runs exactly once and ends with a state that says why.

Each test makes a prepared run the same way: ``-j 1``, a short run first (so the agent
knows its runs end quickly), then a run that waits for a file (its slot stays taken),
then the run that gets prepared.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from launchctl.store import Store
from tests.conftest import AgentProcess, StartAgent, cli, cli_json, make_script, wait_for

SCRIPT = """\
echo "start $LAUNCHCTL_RUN_ID" >> {ledger}
if [ "$1" = long ]; then
  while [ ! -e {release} ]; do sleep 0.02; done
fi
echo "end $LAUNCHCTL_RUN_ID" >> {ledger}
"""


def _job(tmp_path: Path) -> tuple[Path, Path]:
    ledger, release = tmp_path / "ledger", tmp_path / "release"
    make_script(tmp_path / "job", "run.sh", SCRIPT.format(ledger=ledger, release=release))
    cli("job", "create", "code", str(tmp_path / "job"), "-E", "sh run.sh", "-n", "ahead",
        check=True)  # fmt: skip
    return ledger, release


def _launch(kind: str) -> str:
    return str(cli_json("launch", "-j", "ahead", "-q", "default", "--args", kind)["id"])


def _starts(ledger: Path) -> Counter[str]:
    if not ledger.exists():
        return Counter()
    return Counter(line.split()[1] for line in ledger.read_text().splitlines()
                   if line.startswith("start "))  # fmt: skip


def _ends(ledger: Path) -> list[str]:
    return [line.split()[1] for line in ledger.read_text().splitlines() if line.startswith("end ")]


def _prepared_behind_a_long_run(
    store: Store, tmp_path: Path, start_agent: StartAgent, *extra: str
) -> tuple[Path, Path, str, str, AgentProcess]:
    """An agent (-j 1) running a long run with the next run prepared ahead: (ledger,
    release file, the long run's id, the prepared run's id, the agent)."""
    ledger, release = _job(tmp_path)
    short = _launch("short")
    agent = start_agent("-q", "default", "-j", "1", *extra)
    wait_for(lambda: store.runs.get(short)["state"] == "finished", 60, what="short")
    long = _launch("long")
    wait_for(lambda: store.runs.get(long)["state"] == "running", 60, what="long")
    ahead = _launch("short")
    # With its only slot taken, a claimed run is a prepared one.
    wait_for(lambda: store.runs.get(ahead)["state"] == "claimed", 60, what="prepared")
    return ledger, release, long, ahead, agent


def _moves(store: Store, run_id: str) -> list[tuple[str, str]]:
    return [(e["from_state"], e["to_state"]) for e in store.runs.events(run_id)
            if e["from_state"] not in (None, e["to_state"])]  # fmt: skip


def test_drain_puts_a_prepared_run_back_in_its_place_at_once(
    store: Store, tmp_path: Path, start_agent: StartAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAUNCHCTL_HOLD_READY_S", "600")
    ledger, release, long, ahead, agent = _prepared_behind_a_long_run(store, tmp_path, start_agent)
    enqueued = store.runs.get(ahead)["enqueued_at"]
    agent.signal(signal.SIGTERM)
    # Back in its queue while the long run still runs (the drain waits for that one).
    wait_for(lambda: store.runs.get(ahead)["state"] == "queued", 30, what="requeued")
    assert store.runs.get(long)["state"] == "running"
    run = store.runs.get(ahead)
    assert run["agent_id"] is None and run["enqueued_at"] == enqueued
    assert "its agent stopped before it started" in store.runs.events(ahead)[-1]["message"]
    release.touch()
    assert agent.wait(60) == 0
    assert store.runs.get(long)["state"] == "finished"
    assert store.runs.get(ahead)["state"] == "queued"
    assert _starts(ledger)[ahead] == 0
    assert _moves(store, ahead) == [("queued", "claimed"), ("claimed", "queued")]


def test_a_cancel_ends_a_prepared_run_at_once_and_it_never_runs(
    store: Store, tmp_path: Path, start_agent: StartAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAUNCHCTL_HOLD_READY_S", "600")
    ledger, release, long, ahead, _agent = _prepared_behind_a_long_run(store, tmp_path, start_agent)
    cli("runs", "cancel", ahead, check=True)
    wait_for(lambda: store.runs.get(ahead)["state"] == "stopped", 30, what="stopped")
    assert store.runs.get(long)["state"] == "running"  # ended while its slot was taken
    assert store.runs.get(ahead)["reason"] == "cancelled"
    release.touch()
    wait_for(lambda: store.runs.get(long)["state"] == "finished", 30, what="long ends")
    assert _starts(ledger)[ahead] == 0
    assert _moves(store, ahead) == [("queued", "claimed"), ("claimed", "stopped")]


def test_a_prepared_run_waits_a_second_at_most_then_an_idle_agent_runs_it(
    store: Store, tmp_path: Path, start_agent: StartAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent busy with a long run does not keep a prepared run from another agent."""
    monkeypatch.setenv("LAUNCHCTL_HOLD_READY_S", "0.5")
    ledger, release, long, ahead, _agent = _prepared_behind_a_long_run(store, tmp_path, start_agent)
    wait_for(lambda: store.runs.get(ahead)["state"] == "queued", 30, what="given back")
    assert "waited over 0.5s for a slot" in store.runs.events(ahead)[-1]["message"]
    # It stays in the queue (the first agent claims ahead again only after a short run).
    other = start_agent("-q", "default", "-j", "1")
    wait_for(lambda: store.runs.get(ahead)["state"] == "finished", 60, what="other agent")
    assert store.runs.get(long)["state"] == "running"
    assert _starts(ledger)[ahead] == 1
    assert other.output().count(f"started run {ahead}") == 1
    release.touch()
    wait_for(lambda: store.runs.get(long)["state"] == "finished", 30, what="long ends")


def test_a_burst_agent_runs_its_prepared_runs_before_it_exits(store: Store, tmp_path: Path) -> None:
    ledger, _release = _job(tmp_path)
    ids = [_launch("short") for _ in range(12)]
    cli("agent", "-q", "default", "-j", "2", "--burst", check=True, timeout=120)
    assert {store.runs.get(i)["state"] for i in ids} == {"finished"}
    assert set(_starts(ledger).values()) == {1} and set(_starts(ledger)) == set(ids)
    for run_id in ids:  # one event per move, none given back
        assert [to for _f, to in _moves(store, run_id)] == [
            "claimed", "starting", "running", "finished"
        ]  # fmt: skip


@pytest.mark.slow
def test_sigkill_with_prepared_runs_runs_each_exactly_once(
    store: Store, home: Path, tmp_path: Path
) -> None:
    """Short runs through -j 2 (so runs are prepared ahead all the time), the agent
    SIGKILLed at random moments, a new one started after each kill."""
    rng = random.Random(int(os.environ.get("LAUNCHCTL_CHAOS_SEED", "17")))
    ledger, _release = _job(tmp_path)
    ids = {_launch("short") for _ in range(60)}
    env = {**os.environ, "LAUNCHCTL_HOME": str(home)}
    command = [sys.executable, "-m", "launchctl", "agent", "-q", "default", "-j", "2",
               "--resume-queues"]  # fmt: skip
    log = (tmp_path / "agents.log").open("ab")
    for _ in range(12):
        agent = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        time.sleep(rng.uniform(0.3, 1.0))  # a random moment of its work: chaos, not a wait
        agent.send_signal(signal.SIGKILL)
        agent.wait()
    final = subprocess.run([*command, "--burst"], capture_output=True, text=True,
                           timeout=300, env=env)  # fmt: skip
    assert final.returncode == 0, final.stderr
    events = store.runs.events()
    ends = Counter(e["run_id"] for e in events if e["to_state"] in ("finished", "failed", "stopped")
                   and e["from_state"] != e["to_state"])  # fmt: skip
    assert set(ends) == ids and set(ends.values()) == {1}, "one terminal state each"
    starts = _starts(ledger)
    twice = {i: [(e["from_state"], e["to_state"], e["message"]) for e in store.runs.events(i)]
             for i, n in starts.items() if n > 1}  # fmt: skip
    assert set(starts) == ids and not twice, f"each ran exactly once: {twice}"
    # Each ran to its end: its process outlived its agent and was adopted, or it was
    # requeued before it started (a prepared run whose agent died) and ran later.
    unfinished = {i: store.runs.get(i)["reason"] for i in ids
                  if store.runs.get(i)["state"] != "finished"}  # fmt: skip
    assert not unfinished, unfinished
    assert Counter(_ends(ledger)) == Counter(ids)
