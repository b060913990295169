"""A store kept busy by other writers while an agent starts a run never fails the run
(issue 19: the "8 writers and 2 agents" row). Found by helper M with a 1 ms busy timeout:
``Agent._start`` failed a claimed run at stage ``agent`` for a ``StoreBusy``. Now the run
goes back to its queue (its process, if one started, is stopped first) and is run again.

The busy store is made by raising the store's own ``StoreBusy`` where a write happens (a
stand-in for a writer holding the lock past the busy timeout, which no test can time);
everything around it is real: the agent, the store file, the run's process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from launchctl.agent import Agent, AgentOptions, loop, starter
from launchctl.errors import StoreBusy
from launchctl.launch import LaunchRequest, prepare_spec, submit
from launchctl.store import Store
from tests.conftest import cli, make_script, wait_for

BUSY = "the database launchctl.db stayed locked by another writer for over 30 s"


@pytest.fixture
def job(tmp_path: Path) -> Path:
    """A job that appends its pid to a file once per start; the first start sleeps
    ``first_sleep`` seconds (its config), later ones 0.2 s."""
    marks = tmp_path / "starts.txt"
    code = make_script(
        tmp_path / "marker",
        "main.py",
        "import json, os, time\n"
        "long = float(json.loads(os.environ['WANDB_CONFIG']).get('first_sleep', 0.2))\n"
        f"first = not os.path.exists({str(marks)!r})\n"
        f"open({str(marks)!r}, 'a').write(str(os.getpid()) + '\\n')\n"
        "time.sleep(long if first else 0.2)\n",
    ).parent
    cli("job", "create", "code", str(code), "-E", "python main.py", "-n", "marker", check=True)
    return marks


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper has ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@pytest.fixture(autouse=True)
def _started_by_a_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """These runs start as a large snapshot's first run does, in a worker thread with a
    connection of its own (``Starter.start``, its move to running tried three times); a
    small one's starts in the loop (tests/test_throughput_guarantees.py)."""
    monkeypatch.setattr(loop, "SMALL_SNAPSHOT", 0)


def _agent(store: Store) -> Agent:
    agent = Agent(store, ["default"], AgentOptions(), say=lambda _l: None)
    agent.start()
    return agent


def _drain(agent: Agent, store: Store, run_id: str) -> None:
    wait_for(
        lambda: (agent.run_once() or True) and store.runs.state(run_id) in {"finished", "failed"},
        what="the run's end",
        timeout=60,
    )


def test_a_busy_store_before_the_start_sends_the_run_back_not_to_failed(
    store: Store, job: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = submit(store, prepare_spec(LaunchRequest(queue="default", job="marker")))["id"]
    real = starter.Starter.start
    calls = []

    def busy_once(self: starter.Starter, run: dict) -> starter.Started:
        calls.append(run["id"])
        if len(calls) == 1:
            raise StoreBusy(BUSY)
        return real(self, run)

    monkeypatch.setattr(starter.Starter, "start", busy_once)
    agent = _agent(store)
    _drain(agent, store, run_id)
    run = store.runs.get(run_id)
    assert run["state"] == "finished", run
    assert calls == [run_id, run_id]  # claimed twice: once given back, once run
    moves = [(e["from_state"], e["to_state"]) for e in store.runs.events(run_id)]
    assert ("claimed", "queued") in moves
    assert "failed" not in [to for _f, to in moves]
    assert any("the store was busy" in (e["message"] or "") for e in store.runs.events(run_id))
    assert len(job.read_text().split()) == 1  # its process started once


def test_a_busy_store_after_the_process_started_stops_it_and_runs_it_again_once(
    store: Store, job: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The RUNNING move is tried three times; when all fail, the started process is killed
    before the run goes back, so two processes of one run never live at once."""
    # The first process sleeps 60 s: left behind, it would still run at the end.
    req = LaunchRequest(queue="default", job="marker", sets=["first_sleep=60"])
    run_id = submit(store, prepare_spec(req))["id"]
    real_move = starter.move
    refused = []

    def move(store_: Store, rid: str, to: object, **kw: object) -> object:
        if str(to) == "running" and len(refused) < 3:
            wait_for(lambda: job.exists(), what="the first process's start", timeout=30)
            refused.append(rid)
            raise StoreBusy(BUSY)
        return real_move(store_, rid, to, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(starter, "move", move)
    agent = _agent(store)
    _drain(agent, store, run_id)
    assert store.runs.state(run_id) == "finished"
    assert refused == [run_id] * 3
    first, second = (int(p) for p in job.read_text().split())
    assert first != second
    assert not _alive(first)  # the first was killed, not left behind
    moves = [(e["from_state"], e["to_state"]) for e in store.runs.events(run_id)]
    assert ("starting", "queued") in moves and moves.count(("starting", "running")) == 1
