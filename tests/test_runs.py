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


GRACE_S = 5

# The leader, on SIGTERM, waits for its child (as a launcher that forwards the signal
# would); the child notes each SIGTERM it gets and ignores it. Only SIGKILL ends them.
TREE = """\
import os, signal, subprocess, sys, time
marks = sys.argv[1]
def note(who):
    with open(os.path.join(marks, who), 'a') as fh:
        fh.write(repr(time.time()) + '\\n')
child = subprocess.Popen([sys.executable, __file__, marks, 'child']) if len(sys.argv) == 2 else None
if child is None:
    signal.signal(signal.SIGTERM, lambda *_: note('child-term'))
    note('child-pid-' + str(os.getpid()))
    while True:
        time.sleep(600)
else:
    signal.signal(signal.SIGTERM, lambda *_: (note('leader-term'), child.wait()))
    note('leader-pid-' + str(os.getpid()))
    child.wait()
"""


def test_cancel_running_run_kills_its_whole_process_group(
    store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    """Cancel sends SIGTERM to the whole group, then SIGKILL after ``--grace``: a child in the
    group that ignores SIGTERM gets the SIGTERM, is still alive once it has it, and is
    killed after the grace, not before."""
    marks = tmp_path / "marks"
    marks.mkdir()
    code = make_script(tmp_path / "tree", "main.py", TREE).parent
    run_id = cli(
        "launch", "-q", "default", "-u", str(code), "-E", f"python main.py {marks}", check=True
    ).stdout.strip()
    start_agent("-q", "default", "--grace", str(GRACE_S))

    def pid_of(who: str) -> int | None:
        found = [p.name for p in marks.iterdir() if p.name.startswith(f"{who}-pid-")]
        return int(found[0].rsplit("-", 1)[1]) if found else None

    wait_for(lambda: pid_of("leader") and pid_of("child"), what="the run's two processes")
    leader, child = pid_of("leader"), pid_of("child")
    assert leader is not None and child is not None
    assert os.getpgid(child) == os.getpgid(leader)  # one process group, the run's
    out = cli("runs", "cancel", run_id, check=True).stdout
    assert "stopping it" in out
    # SIGTERM reaches the child too, not only the group leader...
    wait_for(lambda: (marks / "child-term").exists(), what="the child's SIGTERM")
    wait_for(lambda: (marks / "leader-term").exists(), what="the leader's SIGTERM")
    # ...and, the grace not yet over, both are still there (they ignore SIGTERM).
    assert _alive(child) and _alive(leader)
    assert store.runs.state(run_id) == "running"
    # After the grace, SIGKILL ends them both.
    wait_for(lambda: not _alive(leader) and not _alive(child), what="SIGKILL after the grace")
    wait_for(lambda: store.runs.state(run_id) == "stopped", what="stopped state")
    run = cli_json("runs", "show", run_id)
    assert run["reason"] == "cancelled"
    assert [e["to_state"] for e in run["events"]][-1] == "stopped"
    # One SIGTERM each: nothing kept signalling them during the grace.
    assert len((marks / "child-term").read_text().splitlines()) == 1
    # Not before the grace: the run ended no sooner than GRACE_S after the child's SIGTERM
    # (a lower bound only; a loaded machine can only make it later).
    termed = float((marks / "child-term").read_text().split()[0])
    assert run["events"][-1]["at"] - termed >= GRACE_S - 0.5


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
    # Its move to running is recorded within 20 ms of its start (README: how runs start);
    # its first line can come sooner. It cannot end before the gate.
    wait_for(lambda: store.runs.state(run_id) == "running", what="the run running", timeout=10)
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
