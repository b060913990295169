"""Issue 12 item 11: `logs` and `logs -f` say what a queued run waits for, and `logs -f`
exits with the run's own status, as `launch --wait` does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from launchctl.store import Store
from tests.conftest import StartAgent, cli, make_script, wait_for


def _launch(code: Path, *extra: str) -> str:
    return cli(
        "launch", "-q", "default", "-u", str(code), "-E", "python main.py", *extra, check=True
    ).stdout.strip()


def test_logs_of_a_queued_run_says_it_has_not_started_and_why(tmp_path: Path) -> None:
    code = make_script(tmp_path / "c", "main.py", "print('hi')\n").parent
    run_id = _launch(code)
    proc = cli("logs", run_id)
    assert proc.returncode == 0
    assert proc.stdout == ""
    assert f"run {run_id} has not started" in proc.stderr
    assert "none is serving queue default" in proc.stderr
    assert "launchctl agent -q default" in proc.stderr
    cli("queue", "pause", "default", check=True)
    proc = cli("logs", run_id)
    assert "queue default is paused" in proc.stderr


def test_logs_follow_on_a_queued_run_says_it_waits_then_exits_with_the_runs_status(
    store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    code = make_script(
        tmp_path / "c", "main.py", "import sys\nprint('working', flush=True)\nsys.exit(7)\n"
    ).parent
    run_id = _launch(code)
    follower = subprocess.Popen(
        [sys.executable, "-m", "launchctl", "logs", "-f", run_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert follower.stderr is not None
    first = follower.stderr.readline()
    assert f"run {run_id} is queued and has not started" in first
    assert "waiting for an agent: none is serving queue default" in first
    start_agent("-q", "default")
    out, rest = follower.communicate(timeout=60)
    assert follower.returncode == 7
    assert out == "working\n"
    assert f"run {run_id} failed" in rest


def test_logs_follow_exits_0_for_a_finished_run_and_130_for_a_stopped_one(
    store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    code = make_script(tmp_path / "ok", "main.py", "print('done')\n").parent
    ok = _launch(code)
    queued = _launch(code, "--priority", "low")
    cli("runs", "cancel", queued, check=True)
    start_agent("-q", "default")
    wait_for(lambda: store.runs.state(ok) == "finished", what="run to finish")
    proc = cli("logs", "-f", ok)
    assert proc.returncode == 0 and proc.stdout == "done\n"
    assert f"run {ok} finished" in proc.stderr
    proc = cli("logs", "-f", queued)
    assert proc.returncode == 130
    assert f"run {queued} stopped" in proc.stderr
    # without -f the exit status is the command's own: the log was printed
    assert cli("logs", queued).returncode == 0


def test_logs_f_says_when_the_agent_holding_the_run_is_gone(store: Store, tmp_path: Path) -> None:
    """A direct launch killed (its terminal closed, a CI job's timeout) leaves its run
    running in the store until another agent takes it over: an adversarial QA pass found
    `logs -f` then waited in silence. It says so once, with the command that recovers the
    run, and follows on; that agent then records the run's end."""
    import os
    import select
    import signal

    code = make_script(tmp_path / "c", "main.py", "import time\ntime.sleep(3)\nprint('done')\n")
    direct = subprocess.Popen(
        [sys.executable, "-m", "launchctl", "launch", "-u", str(code.parent), "-E",
         "python main.py"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    run_id = wait_for(
        lambda: store.db.one("SELECT id FROM runs WHERE state = 'running'"),
        what="the direct launch's run to start",
    )["id"]
    os.kill(direct.pid, signal.SIGKILL)  # the launcher only: its run goes on
    direct.wait()
    follower = subprocess.Popen(
        [sys.executable, "-m", "launchctl", "logs", "-f", run_id],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert follower.stderr is not None
        ready, _, _ = select.select([follower.stderr], [], [], 30)  # never hang the suite
        line = follower.stderr.readline() if ready else "(nothing said in 30 s)"
        assert line == (
            f"run {run_id}'s agent (pid {direct.pid}) is gone; the run is recorded as it ends"
            " once an agent takes it over: `launchctl agent -q default`\n"
        )
        assert store.runs.state(run_id) == "running"  # nothing but an agent ends it there
        cli("agent", "-q", "default", "--burst", check=True, timeout=60)
        out, err = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    assert out == "done\n" and f"run {run_id} finished" in err
