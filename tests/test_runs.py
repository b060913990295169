"""Runs: cancel (process group gone), logs -f, listing and showing, the wait for CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from launchctl.store import Store
from tests.conftest import EXAMPLES, StartAgent, cli, cli_json, make_script, wait_for


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent has not reaped it yet.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_cancel_running_run_kills_its_whole_process_group(
    store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    pids = tmp_path / "pids"
    code = make_script(
        tmp_path / "tree",
        "main.py",
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(600)\n",
    ).parent
    run_id = cli(
        "launch", "-q", "default", "-u", str(code), "-E", "python main.py", check=True
    ).stdout.strip()
    start_agent("-q", "default", "--grace", "2")
    wait_for(lambda: pids.exists() and pids.read_text().count(" ") == 1, what="run's processes")
    leader, child = map(int, pids.read_text().split())
    assert _alive(leader) and _alive(child)
    out = cli("runs", "cancel", run_id, check=True).stdout
    assert "stopping it" in out
    wait_for(lambda: store.runs.state(run_id) == "stopped", what="stopped state")
    wait_for(lambda: not _alive(leader) and not _alive(child), what="process group to exit")
    run = cli_json("runs", "show", run_id)
    assert run["reason"] == "cancelled"
    assert [e["to_state"] for e in run["events"]][-1] == "stopped"


def test_cancel_of_a_queued_run_stops_it_at_once(store: Store) -> None:
    run_id = cli(
        "launch",
        "-q",
        "default",
        "-u",
        str(EXAMPLES / "hello"),
        "-E",
        "python train.py",
        check=True,
    ).stdout.strip()
    assert cli("runs", "cancel", run_id, check=True).stdout.strip() == f"run {run_id} stopped"
    assert store.runs.state(run_id) == "stopped"
    proc = cli("runs", "cancel", run_id)
    assert proc.returncode == 1 and "already stopped" in proc.stderr


def test_logs_follow_streams_a_live_run_until_it_ends(
    store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    gate = tmp_path / "gate"
    code = make_script(
        tmp_path / "slow",
        "main.py",
        "import os, time\n"
        "print('first line', flush=True)\n"
        f"while not os.path.exists({str(gate)!r}): time.sleep(0.05)\n"
        "print('last line', flush=True)\n",
    ).parent
    run_id = cli(
        "launch", "-q", "default", "-u", str(code), "-E", "python main.py", check=True
    ).stdout.strip()
    start_agent("-q", "default")
    follower = subprocess.Popen(
        [sys.executable, "-m", "launchctl", "logs", "-f", run_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert follower.stdout is not None
    assert follower.stdout.readline() == "first line\n"  # arrives while the run still runs
    assert store.runs.state(run_id) == "running"
    gate.touch()
    rest, err = follower.communicate(timeout=30)
    assert rest == "last line\n"
    assert f"run {run_id} finished" in err
    assert cli("logs", run_id, check=True).stdout == "first line\nlast line\n"


def test_launch_wait_streams_the_log_and_exits_with_the_runs_status(
    store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    code = make_script(
        tmp_path / "ci", "main.py", "import sys\nprint('checking', flush=True)\nsys.exit(4)\n"
    ).parent
    start_agent("-q", "default")
    proc = cli("launch", "-q", "default", "-u", str(code), "-E", "python main.py", "--wait")
    assert proc.returncode == 4
    assert proc.stdout == "checking\n"
    assert "failed (stage run: exit code 4)" in proc.stderr
    ok = cli(
        "launch",
        "-q",
        "default",
        "-u",
        str(EXAMPLES / "hello"),
        "-E",
        "python train.py",
        "--wait",
        "--json",
    )
    assert ok.returncode == 0
    import json

    record = json.loads(ok.stdout)
    assert record["state"] == "finished"
    assert "epoch 3/3" in ok.stderr  # with --json the log goes to stderr


def test_runs_list_filters_and_show_has_the_history(store: Store) -> None:
    hello = str(EXAMPLES / "hello")
    cli("launch", "-u", hello, "-E", "python train.py", check=True)
    queued = cli("launch", "-q", "default", "-j", "hello", check=True).stdout.strip()
    assert [r["id"] for r in cli_json("runs", "list", "--state", "queued")] == [queued]
    assert [r["id"] for r in cli_json("runs", "list", "-q", "default")] == [queued]
    assert len(cli_json("runs", "list", "--limit", "1")) == 1
    table = cli("runs", "list", check=True).stdout
    assert "finished" in table and "queued" in table and "(direct)" in table
    finished = cli_json("runs", "list", "--state", "finished")[0]
    shown = cli("runs", "show", finished["id"][:5], check=True).stdout
    for piece in ("state:      finished", "exit code:  0", "queued -> claimed", "output.log"):
        assert piece in shown
    proc = cli("runs", "list", "--state", "done")
    assert proc.returncode == 1 and "unknown state 'done'" in proc.stderr
