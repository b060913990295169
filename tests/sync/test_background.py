"""``BackgroundSync`` (issue 13, ``agent --sync``): a sync pass every interval in a thread;
an unreachable server or a refusal is said once, not every interval, and backs off; a pass
that blows up never takes the agent down."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from launchctl.errors import LaunchctlError
from launchctl.sync.background import BackgroundSync
from launchctl.sync.wire import Refused, Unreachable
from tests.conftest import StartAgent, cli, cli_json, make_script, wait_for
from tests.sync.standin import WandbStandIn
from tests.sync.test_wandb_offline import OFFLINE, TRAIN


class Script:
    """A stand-in for a sync pass: each call takes the next outcome (an exception to raise
    or a list of items sent); the last one repeats."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self) -> Any:
        with self.lock:
            self.calls += 1
            outcome = self.outcomes[0] if len(self.outcomes) == 1 else self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def _background(script: Script, lines: list[str], **kw: Any) -> BackgroundSync:
    return BackgroundSync(0.01, lines.append, run_pass=script, max_interval=0.04, **kw)


@pytest.fixture
def started() -> Any:
    made: list[BackgroundSync] = []

    def start(bg: BackgroundSync) -> BackgroundSync:
        made.append(bg)
        bg.start()
        return bg

    yield start
    for bg in made:
        bg.stop()


Start = Callable[[BackgroundSync], BackgroundSync]


def test_an_unreachable_server_is_said_once_then_its_return_once(started: Start) -> None:
    offline = Unreachable("the server at http://127.0.0.1:9 is unreachable (connection refused)")
    # None: a pass with nothing owed asks the server nothing, so it is no news of it
    script = Script(offline, offline, None, offline, offline, ["run-a", "run-b"], [])
    lines: list[str] = []
    bg = started(_background(script, lines))
    wait_for(lambda: script.calls >= 7, what="seven passes")
    bg.stop()
    assert not bg.alive
    unreachable = [ln for ln in lines if "unreachable" in ln]
    assert len(unreachable) == 1, lines
    assert unreachable[0].startswith("sync: the server at http://127.0.0.1:9 is unreachable")
    assert "the work waits; next try in" in unreachable[0]
    assert sum("answers again" in ln for ln in lines) == 1
    assert sum(ln == "sync: sent 2 item(s)" for ln in lines) == 1  # and nothing for []


def test_a_refusal_is_said_once_and_a_new_one_is_said_again(started: Start) -> None:
    bad_key = Refused("the server at http://x refused the API key (HTTP 401)")
    other = Refused("the server at http://x refused UpsertBucket: permission denied")
    script = Script(bad_key, bad_key, bad_key, other, other, [])
    lines: list[str] = []
    started(_background(script, lines))
    wait_for(lambda: script.calls >= 7, what="seven passes")
    assert sum("refused the API key" in ln for ln in lines) == 1
    assert sum("permission denied" in ln for ln in lines) == 1


def test_a_pass_that_blows_up_never_stops_the_thread(started: Start) -> None:
    script = Script(KeyError("boom"), KeyError("boom"), LaunchctlError("no key"), [])
    lines: list[str] = []
    bg = started(_background(script, lines))
    wait_for(lambda: script.calls >= 5, what="passes after the failures")
    assert bg.alive
    assert sum("a sync pass failed: KeyError" in ln for ln in lines) == 1
    assert sum(ln.startswith("sync: no key") for ln in lines) == 1


def test_the_back_off_grows_and_stops_at_the_maximum() -> None:
    offline = Unreachable("the server at http://x is unreachable")
    bg = BackgroundSync(1.0, lambda line: None, run_pass=Script(offline), max_interval=5.0)
    waits = [bg._one() for _ in range(5)]
    assert waits == [2.0, 4.0, 5.0, 5.0, 5.0]
    bg._run_pass = Script([])
    assert bg._one() == 1.0  # back to the interval once the server answers


def test_stop_returns_while_the_thread_waits_out_a_long_interval() -> None:
    script = Script([])
    bg = BackgroundSync(3600.0, lambda line: None, run_pass=script)
    bg.start()
    wait_for(lambda: script.calls == 1, what="the first pass")
    bg.stop(timeout=10)
    assert not bg.alive and script.calls == 1


def test_wake_runs_a_pass_before_the_interval_is_up() -> None:
    script = Script([])
    bg = BackgroundSync(3600.0, lambda line: None, run_pass=script)
    bg.start()
    try:
        wait_for(lambda: script.calls == 1, what="the first pass")
        bg.wake()
        wait_for(lambda: script.calls == 2, what="the pass wake() asked for")
    finally:
        bg.stop()


def test_an_interval_of_zero_is_refused() -> None:
    with pytest.raises(LaunchctlError, match="over 0 seconds"):
        BackgroundSync(0, lambda line: None)


# -- agent --sync, end to end -----------------------------------------------------------


def test_agent_sync_uploads_in_the_background_and_rides_out_an_offline_server(
    tmp_path: Path,
    wandb_server: WandbStandIn,
    start_agent: StartAgent,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An agent with --sync uploads a finished offline W&B run by itself; the server then
    answers 503 to three passes in a row (offline for the client): the agent says so once,
    keeps serving, and sends the next run when the server answers again."""
    for name, value in {**wandb_server.env(), "LAUNCHCTL_SYNC_RETRIES": "0"}.items():
        monkeypatch.setenv(name, value)
    job = tmp_path / "job"
    make_script(job, "train.py", TRAIN)
    cli("queue", "create", "offline", "-c", json.dumps(OFFLINE), check=True)
    agent = start_agent("-q", "offline", "--sync", "--sync-interval", "0.2")

    def launch() -> str:
        return cli(
            "launch", "-q", "offline", "-u", str(job), "-E", "python train.py", check=True
        ).stdout.strip()

    def linked(run_id: str) -> bool:  # recorded once wandb sync of its folder went
        return bool(cli_json("runs", "show", run_id)["wandb_runs"])

    first = launch()
    wait_for(lambda: linked(first), timeout=90, what="the first run uploaded")
    wandb_server.fail_next(3, 503)
    second = launch()
    wait_for(lambda: linked(second), timeout=90, what="the second run uploaded")
    wait_for(lambda: "answers again" in agent.output(), what="the agent to say so")
    assert len([r for r in wandb_server.requests if r.status == 503]) == 3
    out = agent.output()
    assert sum("is offline" in ln for ln in out.splitlines()) == 1, out
    assert sum("answers again" in ln for ln in out.splitlines()) == 1, out
    assert wandb_server.api_key not in out
    for run_id in (first, second):
        run = cli_json("runs", "show", run_id)
        remote = wandb_server.run(run["entity"], run["project"], run_id)
        assert run["state"] == "finished" and remote is not None and len(remote.history) == 5
