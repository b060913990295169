"""The agent: claim order, max_jobs, paused queues, wake-up, signals, failures, leases."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from launchctl.agent import Agent, AgentOptions
from launchctl.launch import LaunchRequest, prepare_spec, submit
from launchctl.store import Store
from tests.conftest import StartAgent, cli, make_script, wait_for


@pytest.fixture
def job(tmp_path: Path) -> str:
    """A job that sleeps for $SLEEP (from its run config) and prints its run id."""
    code = make_script(
        tmp_path / "sleeper",
        "main.py",
        "import json, os, sys, time\n"
        "cfg = json.loads(os.environ['WANDB_CONFIG'])\n"
        "time.sleep(float(cfg.get('sleep', 0)))\n"
        "print('ran', os.environ['LAUNCHCTL_RUN_ID'])\n"
        "sys.exit(int(cfg.get('exit', 0)))\n",
    ).parent
    cli("job", "create", "code", str(code), "-E", "python main.py", "-n", "sleeper", check=True)
    return "sleeper"


def enqueue(
    store: Store, queue: str = "default", priority: str | None = None, **config: object
) -> str:
    sets = [f"{k}={v}" for k, v in config.items()]
    spec = prepare_spec(LaunchRequest(queue=queue, job="sleeper", priority=priority, sets=sets))
    return str(submit(store, spec)["id"])


def running_intervals(store: Store) -> list[tuple[float, float, str]]:
    """(start, end, run id) of every run, from the event log."""
    spans: dict[str, list[float]] = {}
    for ev in store.runs.events():
        if ev["to_state"] == "running":
            spans.setdefault(ev["run_id"], [0.0, 0.0])[0] = ev["at"]
        elif ev["from_state"] == "running":
            spans.setdefault(ev["run_id"], [0.0, 0.0])[1] = ev["at"]
    return sorted((s, e, r) for r, (s, e) in spans.items())


def max_overlap(intervals: list[tuple[float, float, str]]) -> int:
    points = sorted([(s, 1) for s, _, _ in intervals] + [(e, -1) for _, e, _ in intervals])
    best = cur = 0
    for _, delta in points:
        cur += delta
        best = max(best, cur)
    return best


def test_claims_highest_priority_first_then_oldest(store: Store, job: str) -> None:
    order = [("low", "a"), ("high", "b"), ("medium", "c"), ("critical", "d"), ("high", "e")]
    ids = {name: enqueue(store, priority=prio) for prio, name in order}
    cli("agent", "-q", "default", "--burst", check=True)
    started = [r for _, _, r in running_intervals(store)]
    assert started == [ids["d"], ids["b"], ids["e"], ids["c"], ids["a"]]


def test_never_runs_more_than_max_jobs_at_once(store: Store, job: str) -> None:
    for _ in range(6):
        enqueue(store, sleep=0.4)
    proc = cli("agent", "-q", "default", "-j", "2", "--burst", check=True)
    assert "max_jobs 2" in proc.stderr
    spans = running_intervals(store)
    assert len(spans) == 6
    assert max_overlap(spans) == 2


def test_default_max_jobs_is_one_and_minus_one_is_unlimited(store: Store, job: str) -> None:
    for _ in range(3):
        enqueue(store, sleep=0.5)
    proc = cli("agent", "-q", "default", "--burst", check=True)
    assert "max_jobs 1" in proc.stderr
    assert max_overlap(running_intervals(store)) == 1
    for _ in range(3):
        enqueue(store, sleep=1.0)
    proc = cli("agent", "-q", "default", "-j", "-1", "--burst", check=True)
    assert "max_jobs unlimited" in proc.stderr
    assert max_overlap(running_intervals(store)[3:]) == 3


def test_a_paused_queue_is_not_claimed(store: Store, job: str) -> None:
    cli("queue", "create", "other", check=True)
    paused = enqueue(store)
    served = enqueue(store, queue="other")
    cli("queue", "pause", "default", check=True)
    cli("agent", "-q", "default", "-q", "other", "--burst", check=True)
    assert store.runs.state(paused) == "queued"
    assert store.runs.state(served) == "finished"
    cli("queue", "resume", "default", check=True)
    cli("agent", "-q", "default", "--burst", check=True)
    assert store.runs.state(paused) == "finished"


def test_round_robin_across_queues(store: Store, job: str) -> None:
    cli("queue", "create", "b", check=True)
    a_runs = [enqueue(store, queue="default") for _ in range(3)]
    b_runs = [enqueue(store, queue="b") for _ in range(3)]
    cli("agent", "-q", "default", "-q", "b", "--burst", check=True)
    started = [r for _, _, r in running_intervals(store)]
    expected = [a_runs[0], b_runs[0], a_runs[1], b_runs[1], a_runs[2], b_runs[2]]
    assert started == expected


def test_agent_exits_nonzero_and_names_a_missing_queue(store: Store) -> None:
    proc = cli("agent", "-q", "default", "-q", "ghost", timeout=20)
    assert proc.returncode == 1
    assert "queue 'ghost' does not exist" in proc.stderr
    assert cli("agent", timeout=20).returncode == 1


def test_agent_refuses_a_queue_whose_resource_it_cannot_run(store: Store) -> None:
    # Issue 10: `queue create` refuses such a queue now (tests/test_runner_registry.py); one
    # that an older launchctl let in is refused by the agent, in one line.
    entity = store.queues.get("default")["entity"]
    store.queues.create(
        "cluster", resource="sagemaker", entity=entity, config={}, description=None
    )  # issue 14 gave slurm a runner: W&B's cloud runner stands for one this build lacks
    proc = cli("agent", "-q", "cluster", timeout=20)
    assert proc.returncode == 1 and "'sagemaker' is W&B Launch's Amazon" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_new_run_is_picked_up_by_the_file_watch_not_the_poll(
    store: Store, job: str, start_agent: StartAgent
) -> None:
    agent = start_agent("-q", "default", "--poll", "120")
    wait_for(lambda: store.agents.live(within_s=60), what="agent registration")
    # The watch is up once a store write wakes the agent: a first run, nudged by harmless
    # writes (a note on it) until it has run; with a 120 s poll only the watch can start it.
    probe = enqueue(store)

    def probe_ran() -> bool:
        if store.runs.state(probe) == "finished":
            return True
        store.runs.note(probe, "a write to wake the agent")
        return False

    wait_for(probe_ran, timeout=20, interval=0.2, what="the watch to wake the agent")
    run_id = enqueue(store)
    # With a 120 s poll, only the watch can start it this soon.
    wait_for(lambda: store.runs.state(run_id) == "finished", timeout=20, what="run to finish")
    assert "started run" in agent.output()


def test_one_failing_run_never_stops_the_agent(store: Store, job: str, tmp_path: Path) -> None:
    """A run that fails at each stage (``agent``, ``build``, ``run``) ends ``failed`` with that
    stage and its reason, and the same agent goes on to the runs after it."""
    bad = make_script(tmp_path / "bad", "x.py", "")
    cli(
        "job",
        "create",
        "code",
        str(bad.parent),
        "-E",
        "no-such-command-xyz",
        "-n",
        "bad",
        check=True,
    )
    spec = prepare_spec(LaunchRequest(queue="default", job="bad"))
    broken = submit(store, spec)["id"]
    # Stage agent: a git job whose repository cannot be cloned when the run starts (a
    # folder that is there, so job create takes it, but holds no repository).
    (tmp_path / "missing.git").mkdir()
    missing = f"file://{tmp_path}/missing.git"
    spec = prepare_spec(LaunchRequest(queue="default", uri=missing, entry_point="python x.py"))
    unclonable = submit(store, spec)["id"]
    # Stage build: a code job on a container queue, served while the engine does not answer.
    cli("queue", "create", "box", "-r", "local-container", check=True)
    spec = prepare_spec(LaunchRequest(queue="box", uri=str(bad.parent), entry_point="python x.py"))
    unbuildable = submit(store, spec)["id"]
    crashing = enqueue(store, exit=7)
    fine = enqueue(store)
    no_engine = {"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    cli("agent", "-q", "box", "-q", "default", "--burst", env=no_engine, check=True)
    first = store.runs.get(broken)
    assert (first["state"], first["stage"]) == ("failed", "run")
    assert "command not found: no-such-command-xyz" in first["reason"]
    at_agent = store.runs.get(unclonable)
    assert (at_agent["state"], at_agent["stage"]) == ("failed", "agent"), at_agent
    assert "git clone failed" in at_agent["reason"]
    at_build = store.runs.get(unbuildable)
    assert (at_build["state"], at_build["stage"]) == ("failed", "build"), at_build
    assert "the Docker engine is not reachable" in at_build["reason"]
    for failed in (unclonable, unbuildable):
        assert "running" not in [e["to_state"] for e in store.runs.events(failed)]
    second = store.runs.get(crashing)
    assert (second["state"], second["exit_code"], second["reason"]) == ("failed", 7, "exit code 7")
    assert store.runs.state(fine) == "finished"


def test_first_signal_drains_and_running_runs_finish(
    store: Store, job: str, start_agent: StartAgent
) -> None:
    running = enqueue(store, sleep=1.5)
    waiting = enqueue(store)
    agent = start_agent("-q", "default")
    wait_for(lambda: store.runs.state(running) == "running", what="first run to start")
    agent.signal(signal.SIGTERM)
    assert agent.wait(timeout=30) == 0
    assert store.runs.state(running) == "finished"
    assert store.runs.state(waiting) == "queued"
    assert "no new runs will be claimed" in agent.output()


def test_second_signal_stops_running_runs_as_stopped(
    store: Store, job: str, start_agent: StartAgent
) -> None:
    running = enqueue(store, sleep=60)
    agent = start_agent("-q", "default", "--grace", "2")
    wait_for(lambda: store.runs.state(running) == "running", what="run to start")
    agent.signal(signal.SIGINT)
    wait_for(lambda: "no new runs" in agent.output(), what="drain message")
    agent.signal(signal.SIGINT)
    assert agent.wait(timeout=30) == 0
    run = store.runs.get(running)
    assert (run["state"], run["reason"]) == ("stopped", "agent shut down")


def _locks_taken(call: Any) -> list[str]:
    """The lock operations ``call()`` makes, seen by a profiler (C calls included)."""
    import sys

    taken: list[str] = []

    def profile(_frame: Any, event: str, arg: Any) -> None:
        if event != "c_call":
            return
        owner = type(getattr(arg, "__self__", None)).__name__
        if owner in ("lock", "RLock") and arg.__name__ in ("acquire", "__enter__"):
            taken.append(f"{owner}.{arg.__name__}")

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return taken


def test_what_a_signal_handler_calls_takes_no_lock(store: Store) -> None:
    """A SIGTERM once hung an agent for good: the handler ran in the main thread while
    that thread was inside the waker's Event.wait, holding the event's lock, and the
    handler's wake waited for that same lock. What a handler calls now takes no lock at
    all (the profiler sees every lock taken, C calls included); the loop does the rest."""
    agent = Agent(store, ["default"], AgentOptions(), say=lambda _l: None)
    assert _locks_taken(agent.signalled) == []
    assert agent.waker.wait(0) is True  # it woke the loop
    # The same check fails for what the handler used to call: a threading.Event's set.
    import threading

    assert _locks_taken(threading.Event().set) != []


def test_the_loop_acts_on_each_signal_in_turn(store: Store) -> None:
    """First signal: drain; second: stop the running runs; each said in one line by the
    loop, in order, however close together they came."""
    lines: list[str] = []
    agent = Agent(store, ["default"], AgentOptions(), say=lines.append)
    agent.signalled()
    agent.signalled()
    assert not agent.draining and lines == []  # nothing done inside the handler
    agent._take_signals()
    assert agent.draining and agent.stop_reason == "agent shut down"
    assert [line.split(":")[0].split(" ")[0] for line in lines] == ["stopping", "stopping"]
    assert "no new runs will be claimed" in lines[0] and lines[1] == "stopping running runs"
    agent._take_signals()
    assert len(lines) == 2  # each signal acted on once


def test_agent_renews_the_lease_of_each_run_it_holds(store: Store, job: str) -> None:
    run_id = enqueue(store, sleep=2)
    agent = Agent(store, ["default"], AgentOptions(lease_s=0.3), say=lambda _l: None)
    agent.start()
    agent.run_once()
    first = store.runs.get(run_id)["lease_expires_at"]
    wait_for(
        lambda: (
            (agent.run_once() or True) and store.runs.get(run_id)["lease_expires_at"] > first + 0.2
        ),
        what="lease renewal",
    )
    agent.stop_all()
    wait_for(lambda: (agent.run_once() or True) and not agent.active, what="stop")
    assert store.runs.state(run_id) == "stopped"
    assert [a["id"] for a in store.agents.live(within_s=10)] == [agent.id]


def test_a_run_whose_job_was_deleted_fails_at_the_agent_and_never_runs_in_an_empty_folder(
    store: Store, job: str
) -> None:
    """A queued run that lost its job version (an older launchctl's rerun of a run whose
    job was deleted with --force) is failed at stage agent saying so; before, it ran its
    command in an empty working copy."""
    run_id = enqueue(store)
    store.db.execute("UPDATE runs SET job_version_id = NULL WHERE id = ?", [run_id])
    agent = Agent(store, ["default"], AgentOptions(max_jobs=1), say=lambda _l: None)
    agent.start()
    agent.run(burst=True)
    run = store.runs.get(run_id)
    assert (run["state"], run["stage"]) == ("failed", "agent")
    assert run["reason"] == "its job root/sleeper:v0 no longer exists (deleted)"
    assert run["pid"] is None
