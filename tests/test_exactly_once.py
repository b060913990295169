"""Two agents in two processes on one queue: every run executes exactly once."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from launchctl.launch import LaunchRequest, prepare_spec, submit
from launchctl.store import Store
from tests.conftest import cli, make_script


def _run_exactly_once(store: Store, tmp_path: Path, runs: int, agents: int) -> None:
    ledger = tmp_path / "ledger"
    code = make_script(tmp_path / "job", "run.sh", f'echo "$LAUNCHCTL_RUN_ID" >> {ledger}\n')
    cli("job", "create", "code", str(code.parent), "-E", "sh run.sh", "-n", "mark", check=True)
    spec = prepare_spec(LaunchRequest(queue="default", job="mark"))
    ids = {submit(store, spec)["id"] for _ in range(runs)}
    assert len(ids) == runs

    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "launchctl", "agent", "-q", "default", "-j", "4", "--burst"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(agents)
    ]  # fmt: skip
    for agent in procs:
        _, err = agent.communicate(timeout=600)
        assert agent.returncode == 0, err

    # From what the runs wrote: each id once, none missing, nothing extra.
    written = Counter(ledger.read_text().split())
    assert set(written) == ids
    assert max(written.values()) == 1
    # From the events: each run claimed once, started once, finished once.
    events = store.runs.events()
    for to_state in ("claimed", "running", "finished"):
        per_run = Counter(e["run_id"] for e in events if e["to_state"] == to_state)
        assert set(per_run) == ids and set(per_run.values()) == {1}, to_state
    claimers = Counter(e["agent_id"] for e in events if e["to_state"] == "claimed")
    assert len(claimers) >= 2, f"several agents should have claimed work: {claimers}"
    assert {r["state"] for r in store.runs.select(limit=None)} == {"finished"}


def test_two_agents_run_each_of_200_runs_exactly_once(store: Store, tmp_path: Path) -> None:
    _run_exactly_once(store, tmp_path, runs=200, agents=2)


@pytest.mark.slow
def test_four_agents_run_each_of_1000_runs_exactly_once(store: Store, tmp_path: Path) -> None:
    _run_exactly_once(store, tmp_path, runs=1000, agents=4)
