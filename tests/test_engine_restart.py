"""The Docker engine stops and starts in the middle of a run: the agent survives it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from launchctl.store import Store
from tests.conftest import BUSYBOX, EXAMPLES, AgentProcess, cli, cli_json, wait_for

ROOT = Path(__file__).resolve().parent.parent


def _engine_up(docker: Any) -> bool:
    try:
        return bool(docker.ping())
    except Exception:
        return False


@pytest.mark.slow
def test_the_agent_survives_an_engine_restart_and_marks_runs_truthfully(
    store: Store, docker: Any, start_agent: Callable[..., AgentProcess]
) -> None:
    dockerd = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True)
    if dockerd.returncode != 0 or not (ROOT / "scripts/services.sh").exists():
        pytest.skip("the engine was not started by scripts/services.sh here; cannot restart it")
    cli("queue", "create", "box", "-r", "local-container", check=True)
    resume = (
        "sh -c 'if [ -n \"$WANDB_RESUME\" ]; then echo resumed; else echo first; sleep 300; fi'"
    )
    box = cli("launch", "-q", "box", "-d", BUSYBOX, "-E", resume, check=True).stdout.strip()
    local = cli("launch", "-q", "default", "-u", str(EXAMPLES / "checkpoint"), "-E",
                "python train.py", "--set", "steps=60", "--set", "step_s=0.1",
                check=True).stdout.strip()  # fmt: skip
    agent = start_agent("-q", "box", "-q", "default", "-j", "2")
    wait_for(lambda: "first" in cli("logs", box).stdout, what="the container to run")
    wait_for(lambda: store.runs.state(local) == "running", what="the process to run")

    subprocess.run(["pkill", "-TERM", "-x", "dockerd"], check=True)
    wait_for(lambda: not _engine_up(docker), timeout=60, what="the engine to stop")
    time.sleep(1)  # the engine stays down a moment while runs are under way
    subprocess.run([str(ROOT / "scripts/services.sh"), "docker"], check=True, timeout=180)
    wait_for(lambda: _engine_up(docker), timeout=120, what="the engine to come back")

    # The container was stopped by the engine's shutdown: preempted, requeued, resumed.
    wait_for(lambda: store.runs.state(box) == "finished", timeout=120, what="resumed container")
    run = cli_json("runs", "show", box)
    assert run["resume_count"] == 1
    assert [a["outcome"] for a in run["attempts"]] == ["preempted", "finished"]
    assert "resumed" in cli("logs", box, check=True).stdout
    # The process run never noticed, and the agent is still there.
    wait_for(lambda: store.runs.state(local) == "finished", timeout=60, what="process run")
    assert agent.proc.poll() is None
