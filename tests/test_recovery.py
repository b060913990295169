"""What happens when things go wrong: preemption, requeue, retries, lost agents.

Each test is named after a promise in the README's "What happens when things go wrong".
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

from launchctl.store import Store
from tests.conftest import EXAMPLES, AgentProcess, StartAgent, cli, cli_json, make_script, wait_for

CHECKPOINT = str(EXAMPLES / "checkpoint")
LONG = ["--set", "steps=100", "--set", "step_s=0.05"]


def _progress(run_id: str) -> int:
    # The log file itself: `logs` on a requeued (queued) run prints that it waits, not
    # what its earlier attempts wrote.
    path = Path(cli_json("runs", "show", run_id)["log_path"])
    text = path.read_text() if path.exists() else ""
    steps = re.findall(r"^step (\d+):", text, re.M)
    return int(steps[-1]) if steps else 0


def test_a_preempted_run_resumes_from_its_checkpoint_and_the_sixth_preemption_fails_it(
    store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    run_id = cli("launch", "-q", "default", "-u", CHECKPOINT, "-E", "python train.py",
                 "--set", "steps=200", "--set", "step_s=0.05",
                 "--set", f"checkpoint_dir={tmp_path}", check=True).stdout.strip()  # fmt: skip
    seen = 0
    for preemption in range(1, 7):
        agent = start_agent("-q", "default", "--requeue-running", "--grace", "2")
        before = seen
        wait_for(lambda b=before: _progress(run_id) > b + 2, what="training progress")  # type: ignore[misc]
        agent.signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
        seen = _progress(run_id)
        run = store.runs.get(run_id)
        if preemption <= 5:
            assert (run["state"], run["resume_count"]) == ("queued", preemption)
        else:
            assert run["state"] == "failed"
            assert run["reason"] == "preempted too often (6 times; at most 5 requeues)"
    log = cli("logs", run_id, check=True).stdout
    resumed = [int(n) for n in re.findall(r"^resuming \S+ from step (\d+)", log, re.M)]
    assert len(resumed) == 5
    # Each attempt after the first begins with its mark (issue 12, item 13).
    marks = re.findall(r"^--- attempt (\d+) on agent ", log, re.M)
    assert marks == ["2", "3", "4", "5", "6"]
    assert all(step > 0 for step in resumed) and resumed == sorted(resumed)
    # Same run id and name every time; every attempt is in the history.
    shown = cli_json("runs", "show", run_id)
    assert shown["name"] == run["name"] and len(shown["attempts"]) == 6
    assert [a["outcome"] for a in shown["attempts"]] == ["preempted"] * 6


def test_a_requeued_run_goes_to_the_end_of_its_queue(store: Store, start_agent: StartAgent) -> None:
    first = cli("launch", "-q", "default", "-u", CHECKPOINT, "-E", "python train.py",
                *LONG, check=True).stdout.strip()  # fmt: skip
    agent = start_agent("-q", "default", "--requeue-running")
    wait_for(lambda: store.runs.state(first) == "running", what="first run")
    second = cli("launch", "-q", "default", "-u", CHECKPOINT, "-E", "python train.py",
                 "--set", "steps=1", check=True).stdout.strip()  # fmt: skip
    agent.signal(signal.SIGTERM)
    assert agent.wait(timeout=30) == 0
    assert store.runs.state(first) == "queued"
    cli("queue", "pause", "default", check=True)
    cli("queue", "resume", "default", check=True)
    order = [r["id"] for r in store.runs.select(states=["queued"], limit=None)]
    cli("agent", "-q", "default", "--burst", check=True)
    starts = [e["run_id"] for e in store.runs.events() if e["to_state"] == "running"]
    assert starts[-2:] == [second, first], order  # the requeued run waited its turn again


def test_cancelling_a_requeued_run_stops_its_requeue(store: Store, start_agent: StartAgent) -> None:
    run_id = cli("launch", "-q", "default", "-u", CHECKPOINT, "-E", "python train.py",
                 *LONG, check=True).stdout.strip()  # fmt: skip
    agent = start_agent("-q", "default", "--requeue-running")
    wait_for(lambda: store.runs.state(run_id) == "running", what="run to start")
    agent.signal(signal.SIGTERM)
    agent.wait(timeout=30)
    assert store.runs.state(run_id) == "queued"
    cli("runs", "cancel", run_id, check=True)
    cli("agent", "-q", "default", "--burst", check=True)
    assert store.runs.state(run_id) == "stopped"


BACKOFF_S = 1.5


def _retry_waits(store: Store, run_id: str) -> list[float]:
    """Seconds from each move back to ``queued`` (a retry) to the next start, from the
    run's event log."""
    waits, requeued = [], None
    for event in store.runs.events(run_id):
        if event["to_state"] == "queued" and event["from_state"] == "running":
            requeued = event["at"]
        elif event["to_state"] == "running" and requeued is not None:
            waits.append(event["at"] - requeued)
            requeued = None
    return waits


def test_a_failed_run_is_retried_by_its_queue_policy_and_every_attempt_is_listed(
    store: Store, tmp_path: Path
) -> None:
    counter = tmp_path / "tries"
    code = make_script(
        tmp_path / "flaky", "main.py",
        "import os, sys\n"
        f"path = {str(counter)!r}\n"
        "n = int(open(path).read()) + 1 if os.path.exists(path) else 1\n"
        "open(path, 'w').write(str(n))\n"
        "print('attempt', n, os.environ['WANDB_RUN_ID'])\n"
        "sys.exit(0 if n >= 3 else 7)\n",
    ).parent  # fmt: skip
    config = {"retry": {"max": 2, "on": ["failed"], "backoff_s": BACKOFF_S}}
    cli("queue", "create", "flaky", "--config", json.dumps(config), check=True)
    run_id = cli("launch", "-q", "flaky", "-u", str(code), "-E", "python main.py",
                 check=True).stdout.strip()  # fmt: skip
    cli("agent", "-q", "flaky", "--burst", check=True)
    run = cli_json("runs", "show", run_id)
    assert (run["state"], run["retries"], run["exit_code"]) == ("finished", 2, 0)
    assert [a["outcome"] for a in run["attempts"]] == ["queued", "queued", "finished"]
    assert "attempt failed (exit code 7); retry 1 of 2 in 1.5s" in run["attempts"][0]["message"]
    assert "retry 2 of 2 in 1.5s" in run["attempts"][1]["message"]
    # After the backoff: each attempt after the first starts no sooner than BACKOFF_S after
    # the one before it went back to the queue (a lower bound: load only makes it later).
    waits = _retry_waits(store, run_id)
    assert len(waits) == 2 and all(wait >= BACKOFF_S for wait in waits), waits
    log = cli("logs", run_id, check=True).stdout
    assert log.count(f" {run_id}\n") == 3  # the same run id on every attempt
    assert "attempts:" in cli("runs", "show", run_id, check=True).stdout


def test_retries_stop_at_the_policy_maximum(store: Store, tmp_path: Path) -> None:
    code = make_script(tmp_path / "bad", "main.py", "import sys\nsys.exit(3)\n").parent
    cli("queue", "create", "r1", "--config", '{"retry": {"max": 1}}', check=True)
    run_id = cli("launch", "-q", "r1", "-u", str(code), "-E", "python main.py",
                 check=True).stdout.strip()  # fmt: skip
    cli("agent", "-q", "r1", "--burst", check=True)
    run = store.runs.get(run_id)
    assert (run["state"], run["retries"], run["reason"]) == ("failed", 1, "exit code 3")


TIMED = {"resource_args": {"local-process": {"max_run_time": 1}}}


def test_a_run_that_times_out_is_retried_when_the_policy_says_timeout(
    store: Store, tmp_path: Path
) -> None:
    """``on: [timeout]``: a run past its max_run_time is retried (after the backoff); the
    same queue does not retry a run that fails with an exit code."""
    counter = tmp_path / "tries"
    code = make_script(
        tmp_path / "slow", "main.py",
        "import os, sys, time\n"
        f"path = {str(counter)!r}\n"
        "n = int(open(path).read()) + 1 if os.path.exists(path) else 1\n"
        "open(path, 'w').write(str(n))\n"
        "if n == 1:\n"
        "    time.sleep(300)\n"
        "sys.exit(int(os.environ.get('EXIT', '0')))\n",
    ).parent  # fmt: skip
    config = {**TIMED, "retry": {"max": 1, "on": ["timeout"], "backoff_s": BACKOFF_S}}
    cli("queue", "create", "timed", "--config", json.dumps(config), check=True)
    run_id = cli("launch", "-q", "timed", "-u", str(code), "-E", "python main.py",
                 check=True).stdout.strip()  # fmt: skip
    cli("agent", "-q", "timed", "--burst", "--grace", "1", check=True, timeout=120)
    run = cli_json("runs", "show", run_id)
    assert (run["state"], run["retries"], run["exit_code"]) == ("finished", 1, 0)
    assert [a["outcome"] for a in run["attempts"]] == ["queued", "finished"]
    assert "attempt failed (timeout); retry 1 of 1 in 1.5s" in run["attempts"][0]["message"]
    waits = _retry_waits(store, run_id)
    assert len(waits) == 1 and waits[0] >= BACKOFF_S, waits
    # A failure that is not a timeout is not retried by an `on: [timeout]` policy.
    counter.write_text("1")  # past the slow first attempt
    failing = cli("launch", "-q", "timed", "-u", str(code), "-E", "sh -c 'EXIT=4 python main.py'",
                  check=True).stdout.strip()  # fmt: skip
    cli("agent", "-q", "timed", "--burst", check=True, timeout=120)
    run = store.runs.get(failing)
    assert (run["state"], run["retries"], run["reason"]) == ("failed", 0, "exit code 4")


def test_a_timeout_is_not_retried_by_a_policy_on_failed_only(store: Store, tmp_path: Path) -> None:
    code = make_script(tmp_path / "slow", "main.py", "import time\ntime.sleep(300)\n").parent
    config = {**TIMED, "retry": {"max": 2, "on": ["failed"]}}
    cli("queue", "create", "timed", "--config", json.dumps(config), check=True)
    run_id = cli("launch", "-q", "timed", "-u", str(code), "-E", "python main.py",
                 check=True).stdout.strip()  # fmt: skip
    cli("agent", "-q", "timed", "--burst", "--grace", "1", check=True, timeout=120)
    run = store.runs.get(run_id)
    assert (run["state"], run["retries"], run["reason"]) == ("failed", 0, "timeout")


def test_a_bad_retry_policy_is_refused() -> None:
    for config, message in [
        ('{"retry": {"max": -1}}', "retry.max must be a whole number"),
        ('{"retry": {"on": ["crashed"]}}', "retry.on must be a list of: failed, timeout"),
        ('{"retry": {"tries": 3}}', "retry has unknown key 'tries'"),
    ]:
        proc = cli("queue", "create", "x", "--config", config)
        assert proc.returncode == 1 and message in proc.stderr


# -- agent restarts ----------------------------------------------------------------------------
def _kill(agent: AgentProcess) -> None:
    agent.signal(signal.SIGKILL)
    agent.wait(timeout=10)


def test_a_restarted_agent_adopts_a_process_that_still_runs(
    store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    run_id = cli("launch", "-q", "default", "-u", CHECKPOINT, "-E", "python train.py",
                 "--set", "steps=40", "--set", "step_s=0.05",
                 "--set", f"checkpoint_dir={tmp_path}", check=True).stdout.strip()  # fmt: skip
    first = start_agent("-q", "default")
    wait_for(lambda: _progress(run_id) >= 2, what="progress")
    pid = store.runs.get(run_id)["pid"]
    _kill(first)
    second = start_agent("-q", "default")
    wait_for(lambda: store.runs.state(run_id) == "finished", timeout=60, what="adopted run to end")
    run = cli_json("runs", "show", run_id)
    assert run["pid"] == pid  # the same process, followed again: it never ran twice
    notes = [e["message"] for e in run["events"] if e["from_state"] == e["to_state"]]
    assert any(n.startswith("taken over from agent") for n in notes)
    assert "adopted: following it again after its agent was lost" in notes
    assert "starting" not in [e["to_state"] for e in run["events"]][4:]
    log = cli("logs", run_id, check=True).stdout
    assert log.count("starting ") == 1 and "done at step 40" in log  # the log was appended
    assert "took over run" in second.output()


def test_a_run_that_ended_while_no_agent_watched_gets_its_real_exit_code(
    store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    code = make_script(tmp_path / "short", "main.py",
                       "import sys, time\ntime.sleep(1)\nsys.exit(5)\n").parent  # fmt: skip
    run_id = cli("launch", "-q", "default", "-u", str(code), "-E", "python main.py",
                 check=True).stdout.strip()  # fmt: skip
    first = start_agent("-q", "default")
    wait_for(lambda: store.runs.state(run_id) == "running", what="run to start")
    _kill(first)
    wait_for(lambda: (store.run_dir(run_id) / "exit_code").exists(), what="run to end alone")
    cli("agent", "-q", "default", "--burst", check=True)
    run = store.runs.get(run_id)
    assert (run["state"], run["exit_code"], run["reason"]) == ("failed", 5, "exit code 5")


def _running_when_its_agent_is_killed(store: Store, tmp_path: Path, start_agent: StartAgent) -> str:
    """A long run, started by an agent that is then SIGKILLed; its id."""
    code = make_script(tmp_path / "long", "main.py", "import time\ntime.sleep(300)\n").parent
    run_id = cli("launch", "-q", "default", "-u", str(code), "-E", "python main.py",
                 check=True).stdout.strip()  # fmt: skip
    first = start_agent("-q", "default")
    wait_for(lambda: store.runs.state(run_id) == "running", what="run to start")
    _kill(first)
    return str(run_id)


def test_a_run_whose_process_is_gone_without_an_exit_code_fails_saying_the_agent_was_lost(
    store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    import os

    run_id = _running_when_its_agent_is_killed(store, tmp_path, start_agent)
    pid = store.runs.get(run_id)["pid"]
    # The machine took it all away: the run, and the agent's spawner that would have
    # written its exit code (a run killed alone gets its code, 137: see the next test).
    parent = _parent(pid)
    assert b"spawner.py" in Path(f"/proc/{parent}/cmdline").read_bytes()
    os.kill(parent, signal.SIGKILL)
    os.killpg(pid, signal.SIGKILL)  # no exit code is written

    def gone() -> bool:
        try:
            return not Path(f"/proc/{pid}/environ").read_bytes()  # empty for a zombie
        except OSError:
            return True

    wait_for(gone, what="process to go")
    cli("agent", "-q", "default", "--burst", check=True)
    run = store.runs.get(run_id)
    assert (run["state"], run["stage"]) == ("failed", "agent")
    assert run["reason"] == "agent lost: the run's process is gone and its exit code is unknown"


def test_a_run_killed_while_no_agent_watched_gets_the_code_of_its_signal(
    store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    """Issue 17: the agent's spawner outlives the agent, as the wrapper shell did; a run
    killed by the machine meanwhile (the out-of-memory killer) gets 128+9, named."""
    import os

    run_id = _running_when_its_agent_is_killed(store, tmp_path, start_agent)
    os.killpg(store.runs.get(run_id)["pid"], signal.SIGKILL)
    wait_for(lambda: (store.run_dir(run_id) / "exit_code").exists(), what="its code")
    cli("agent", "-q", "default", "--burst", check=True)
    run = store.runs.get(run_id)
    assert (run["state"], run["stage"], run["exit_code"]) == ("failed", "run", 137)
    assert run["reason"] == (
        "exit code 137 (that of a process killed by SIGKILL, as the out-of-memory killer sends)"
    )


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return int(stat.rpartition(b")")[2].split()[1])


def test_after_an_unclean_stop_queues_with_waiting_work_are_paused_unless_told(
    store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    code = make_script(tmp_path / "long", "main.py", "import time\ntime.sleep(0.5)\n").parent
    first_run = cli("launch", "-q", "default", "-u", str(code), "-E", "python main.py",
                    check=True).stdout.strip()  # fmt: skip
    waiting = cli("launch", "-q", "default", "-u", str(code), "-E", "python main.py",
                  check=True).stdout.strip()  # fmt: skip
    first = start_agent("-q", "default")
    wait_for(lambda: store.runs.state(first_run) == "running", what="run to start")
    _kill(first)
    proc = cli("agent", "-q", "default", "--burst")
    assert "paused queue default: an agent serving it stopped uncleanly" in proc.stderr
    assert store.queues.get("default")["paused"] is True
    assert store.runs.state(first_run) == "finished"  # the running one was adopted
    assert store.runs.state(waiting) == "queued"  # the waiting one did not start by surprise
    cli("queue", "resume", "default", check=True)
    cli("agent", "-q", "default", "--burst", check=True)
    assert store.runs.state(waiting) == "finished"


def test_a_restarted_agent_adopts_a_container_that_still_runs(
    store: Store, docker: object, start_agent: StartAgent
) -> None:
    from tests.conftest import BUSYBOX

    cli("queue", "create", "box", "-r", "local-container", check=True)
    script = "sh -c 'echo one; sleep 2; echo two; exit 3'"
    run_id = cli("launch", "-q", "box", "-d", BUSYBOX, "-E", script, check=True).stdout.strip()
    first = start_agent("-q", "box")
    wait_for(lambda: "one" in cli("logs", run_id).stdout, what="first line")
    _kill(first)
    start_agent("-q", "box", "--resume-queues")
    wait_for(lambda: store.runs.state(run_id) == "failed", timeout=60, what="container's end")
    run = store.runs.get(run_id)
    assert (run["exit_code"], run["reason"]) == (3, "exit code 3")
    log = cli("logs", run_id, check=True).stdout
    assert log.count("one") == 1 and "two" in log


def test_a_container_killed_from_outside_is_preempted_and_requeued(
    store: Store, docker: object, start_agent: StartAgent
) -> None:
    """``docker kill`` of a run's container: ``preempted``, then back at the end of its queue
    (after a run queued meanwhile) with the same run id and name, and ``WANDB_RESUME=allow``."""
    from tests.conftest import BUSYBOX

    cli("queue", "create", "box", "-r", "local-container", check=True)
    said = 'echo "id=[$WANDB_RUN_ID] name=[$WANDB_NAME] resume=[$WANDB_RESUME]"'
    then = 'if [ -n "$WANDB_RESUME" ]; then echo resumed; else sleep 300; fi'
    run_id = cli("launch", "-q", "box", "-d", BUSYBOX, "--name", "long-one", "-E",
                 f"sh -c '{said}; {then}'",
                 check=True).stdout.strip()  # fmt: skip
    start_agent("-q", "box", "-j", "1")
    label = {"label": f"launchctl.run_id={run_id}"}
    container = wait_for(lambda: docker.containers.list(filters=label), what="container")[0]  # type: ignore[attr-defined]
    # Queued while the first runs (one at a time): the requeued run must wait for it.
    later = cli("launch", "-q", "box", "-d", BUSYBOX, "-E", "echo later",
                check=True).stdout.strip()  # fmt: skip
    assert store.runs.state(later) == "queued"
    container.kill()  # not asked for by the run or its agent: preemption
    wait_for(lambda: store.runs.state(run_id) == "finished", timeout=60, what="resumed run")
    run = cli_json("runs", "show", run_id)
    assert (run["id"], run["name"]) == (run_id, "long-one")
    assert run["resume_count"] == 1
    assert [a["outcome"] for a in run["attempts"]] == ["preempted", "finished"]
    assert "stopped from outside (exit code 137)" in run["attempts"][0]["message"]
    assert "preempted" in [e["to_state"] for e in run["events"]]
    log = cli("logs", run_id, check=True).stdout
    assert f"id=[{run_id}] name=[long-one] resume=[]" in log  # the first attempt
    assert f"id=[{run_id}] name=[long-one] resume=[allow]\nresumed" in log  # exactly "allow"
    # Back at the end of its queue: the run queued meanwhile started before its second attempt.
    assert store.runs.state(later) == "finished"
    starts = [e["run_id"] for e in store.runs.events() if e["to_state"] == "running"]
    assert starts == [run_id, later, run_id]


# -- the store under pressure ---------------------------------------------------------------
def test_a_database_locked_too_long_gets_a_clear_message_and_changes_nothing(home: Path) -> None:
    import sqlite3

    cli("queue", "list", check=True)
    holder = sqlite3.connect(home / "launchctl.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        proc = cli("queue", "create", "late", env={"LAUNCHCTL_BUSY_TIMEOUT": "0.5"})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert proc.returncode == 1
    assert "stayed locked by another writer" in proc.stderr and "nothing was changed" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "late" not in [q["name"] for q in cli_json("queue", "list")]


# The full-disk scenario, run in one process on a 512 KiB tmpfs at argv[1]: a queue made
# while there is room, the disk filled, a write refused, room made again, the queues listed.
FULL_DISK = """\
import contextlib, json, os, subprocess, sys
mount, big = sys.argv[1], sys.argv[2]
env = {**os.environ, "LAUNCHCTL_HOME": os.path.join(mount, "home")}
def cli(*args):
    return subprocess.run([sys.executable, "-m", "launchctl", *args], env=env,
                          capture_output=True, text=True, timeout=60)
before = cli("queue", "create", "before")
assert before.returncode == 0, before.stderr
filler = os.path.join(mount, "filler")
with open(filler, "wb") as fh, contextlib.suppress(OSError):
    while True:
        fh.write(b"\\0" * 65536)
refused = cli("queue", "create", "big", "--config", big)
os.unlink(filler)
listed = cli("queue", "list", "--json")
print(json.dumps({"rc": refused.returncode, "stderr": refused.stderr, "stdout": refused.stdout,
                  "queues": [q["name"] for q in json.loads(listed.stdout)]}))
"""


def test_a_full_disk_gets_a_clear_message_and_changes_nothing(tmp_path: Path) -> None:
    """On a full disk a write is refused in exactly one line, and nothing is changed. The
    small disk is a tmpfs mounted in a mount namespace of the test's own (``unshare``), by
    root or, where user namespaces are allowed, by anyone; nothing is mounted on the host."""
    import shutil
    import subprocess
    import sys

    import pytest

    mount = tmp_path / "small"
    mount.mkdir()
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"builder": {"pad": "x" * 600_000}}))
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK)
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) here (util-linux) to mount a small tmpfs to fill a disk")
    # 4 MiB: room for a fresh store's migrations (about 0.5 MB of WAL at their peak, m011
    # on); the script fills what is left with a file of its own before the refused write.
    mounted = 'mount -t tmpfs -o size=4m tmpfs "$1" && shift && exec "$@"'
    proc = subprocess.run(
        ["unshare", "--mount", "--map-root-user", "--", "sh", "-c", mounted, "sh", str(mount),
         sys.executable, str(script), str(mount), str(big)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    # Skipped only when the mount itself could not be made; any other failure fails.
    if proc.returncode != 0 and any(w in proc.stderr for w in ("unshare:", "mount:")):
        why = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        pytest.skip(
            "cannot mount a small tmpfs to fill a disk: neither root nor user namespaces"
            f" here (unshare --mount --map-root-user: {why[0]})"
        )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["rc"] == 1 and result["stdout"] == ""
    lines = result["stderr"].splitlines()
    assert len(lines) == 1, lines  # one line: no traceback, no second message
    assert "is full" in lines[0]
    assert result["queues"] == ["before", "default"]  # nothing changed


def test_many_writers_and_two_agents_never_show_database_is_locked(
    store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    import subprocess
    import sys

    code = make_script(tmp_path / "t", "main.py", "print('ok')\n").parent
    cli("job", "create", "code", str(code), "-E", "python main.py", "-n", "tiny", check=True)
    agents = [start_agent("-q", "default", "-j", "4") for _ in range(2)]
    script = (
        "import subprocess, sys\n"
        "for _ in range(8):\n"
        "    p = subprocess.run([sys.executable, '-m', 'launchctl', 'launch', '-q', 'default',"
        " '-j', 'tiny'], capture_output=True, text=True)\n"
        "    print(p.returncode, p.stderr.strip().replace('\\n', ' | '))\n"
    )
    writers = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
               for _ in range(8)]  # fmt: skip
    results = [w.communicate(timeout=300)[0] for w in writers]
    lines = [line for out in results for line in out.splitlines()]
    assert len(lines) == 64
    assert all(line.startswith("0 ") for line in lines), lines
    assert not any("locked" in line for line in lines)
    wait_for(lambda: len(store.runs.select(states=["finished"], limit=None)) == 64, timeout=120,
             what="all runs to finish")  # fmt: skip
    assert all(a.proc.poll() is None for a in agents)
    # Nor does it reach the agents (a claim, a lease renewal or a move that met a lock).
    reported = 0
    for agent in agents:
        agent.stop()
        out = agent.output()
        assert "locked" not in out.lower() and "Traceback" not in out, out[-2000:]
        reported += len(re.findall(r"^run \S+ finished \(exit code 0\)$", out, re.M))
    assert reported == 64  # each run's end, said by the agent that ran it
