"""local-process's kill path, in process (issue 19): real process groups, no agent.

A stop is SIGTERM to the run's whole process group, then SIGKILL to the whole group once
the grace is over; a run whose leader ends has what it left in its group killed; an agent
that adopts a lost agent's run stops it the same way. Each test starts real processes: a
leader (the run's command, under local-process's wrapper shell) and a child of it in the
same group; both note every SIGTERM they get in a file, and neither dies of it.

These run in the pytest process (not through the CLI), so `nox -s mutate` sees them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from launchctl import procfs
from launchctl.runners.base import Exit, Launch
from launchctl.runners.local_process import (
    EXIT_FILE,
    PID_FILE,
    AdoptedProcess,
    LocalProcessRunner,
    ProcessHandle,
    wrap,
)
from tests.conftest import wait_for

# Both processes note each SIGTERM and go on; "leader" starts a "child" and waits;
# "quitter" starts a child and ends at once, leaving the child in its group.
PROGRAM = """\
import os, signal, subprocess, sys, time
marks, role = sys.argv[1], sys.argv[2]
def mark(text):
    fd = os.open(marks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, f"{role} {os.getpid()} {text}\\n".encode())
    os.close(fd)
signal.signal(signal.SIGTERM, lambda *_: mark("TERM"))
if role == "child":
    mark("ready")
    while True:
        time.sleep(600)
child = subprocess.Popen([sys.executable, __file__, marks, "child"])
while b"child %d ready" % child.pid not in open(marks, "rb").read():
    time.sleep(0.01)
mark("ready")
if role == "quitter":
    sys.exit(0)
while True:
    time.sleep(600)
"""


class Group:
    """The marks file of one started run: who is ready, who got SIGTERM."""

    def __init__(self, folder: Path) -> None:
        self.program = folder / "program.py"
        self.program.write_text(PROGRAM)
        self.marks = folder / "marks"
        self.marks.touch()

    def command(self, role: str = "leader") -> list[str]:
        return [sys.executable, str(self.program), str(self.marks), role]

    def lines(self) -> list[list[str]]:
        try:
            return [line.split() for line in self.marks.read_text().splitlines()]
        except FileNotFoundError:
            return []

    def pid(self, role: str) -> int:
        return next(int(pid) for who, pid, what in self.lines() if who == role)

    def ready(self, role: str = "leader") -> bool:
        return any(who == role and what == "ready" for who, _, what in self.lines())

    def terms(self, role: str) -> int:
        return sum(1 for who, _, what in self.lines() if who == role and what == "TERM")


@pytest.fixture
def group(tmp_path: Path) -> Iterator[Group]:
    made = Group(tmp_path)
    yield made
    # Whatever a failed test left running: only the processes this test started.
    for _who, pid, _ in made.lines():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def launch_of(tmp_path: Path, command: list[str], run_id: str = "r-signals") -> Launch:
    env = {**os.environ, "LAUNCHCTL_RUN_ID": run_id}
    return Launch(run={"id": run_id}, entrypoint=command, args=[], env=env,
                  workdir=tmp_path, log_path=tmp_path / "run" / "output.log")  # fmt: skip


def start(tmp_path: Path, group: Group, role: str = "leader") -> ProcessHandle:
    handle = LocalProcessRunner().start(launch_of(tmp_path, group.command(role)))
    wait_for(lambda: group.ready(role), what=f"the {role} and its child to start")
    return handle


def dead(pid: int) -> bool:
    return not procfs.live(pid)


def test_a_stop_sends_sigterm_to_the_whole_group_and_waits_for_the_grace(
    tmp_path: Path, group: Group
) -> None:
    handle = start(tmp_path, group)
    leader, child = group.pid("leader"), group.pid("child")
    handle.stop(grace_s=600)
    # Both the run's command and its child get the SIGTERM (the group, not the leader)...
    wait_for(lambda: group.terms("leader") == 1 and group.terms("child") == 1,
             what="SIGTERM to reach the leader and its child")  # fmt: skip
    # ... and ignoring it, both live on within the grace: no SIGKILL before it is over.
    assert procfs.live(leader) and procfs.live(child)
    assert handle.poll() is None
    # A second stop neither signals again nor starts a shorter grace.
    killer = handle._killer
    handle.stop(grace_s=0)
    assert handle._killer is killer
    assert procfs.live(leader) and procfs.live(child) and handle.poll() is None
    assert group.terms("leader") == 1 and group.terms("child") == 1


def test_after_the_grace_the_whole_group_is_killed(tmp_path: Path, group: Group) -> None:
    handle = start(tmp_path, group)
    leader, child = group.pid("leader"), group.pid("child")
    handle.stop(grace_s=0.2)
    exit_ = wait_for(handle.poll, what="the run to end after its grace")
    # The wrapper shell (the group's leader) outlived the SIGTERM: SIGKILL ended the run.
    assert exit_ == Exit(code=None, signal=signal.SIGKILL, message="killed by SIGKILL")
    wait_for(lambda: dead(leader) and dead(child), what="the command and its child to die")
    # SIGTERM came first, to both.
    assert group.terms("leader") == 1 and group.terms("child") == 1


def test_what_a_run_leaves_in_its_group_is_killed_when_it_ends(
    tmp_path: Path, group: Group
) -> None:
    handle = start(tmp_path, group, "quitter")
    child = group.pid("child")
    exit_ = wait_for(handle.poll, what="the run to end")
    assert exit_ == Exit(code=0)
    wait_for(lambda: dead(child), what="the child it left behind to be killed")
    assert group.terms("child") == 0  # SIGKILL at once: nobody is asked to stop now
    assert (tmp_path / "run" / EXIT_FILE).read_text().strip() == "0"


def test_a_run_whose_leader_is_killed_from_outside_ends_with_its_group(
    tmp_path: Path, group: Group
) -> None:
    handle = start(tmp_path, group)
    leader, child = group.pid("leader"), group.pid("child")
    assert handle.pid is not None
    os.kill(handle.pid, signal.SIGUSR1)  # only the wrapper shell, the group's leader
    exit_ = wait_for(handle.poll, what="the run to end")
    assert exit_ == Exit(code=None, signal=signal.SIGUSR1, message="killed by SIGUSR1")
    wait_for(lambda: dead(leader) and dead(child), what="the rest of its group to be killed")
    assert group.terms("leader") == 0 and group.terms("child") == 0


def test_a_run_that_exits_reports_its_code(tmp_path: Path) -> None:
    launch = launch_of(tmp_path, [sys.executable, "-c", "import sys; sys.exit(3)"])
    handle = LocalProcessRunner().start(launch)
    assert wait_for(handle.poll, what="the exit") == Exit(code=3)
    handle.stop(grace_s=0)  # a stop after the end does nothing
    assert handle._killer is None


# -- a lost agent's run, adopted by another ----------------------------------------------


def start_unwatched(tmp_path: Path, group: Group, run_id: str) -> subprocess.Popen[bytes]:
    """The run as a lost agent left it: the wrapper shell in its own group, nobody
    watching it (this test reaps it only at the end)."""
    folder = tmp_path / "run"
    folder.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        wrap(group.command(), folder, None),
        env={**os.environ, "LAUNCHCTL_RUN_ID": run_id},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for(group.ready, what="the run to start")
    return proc


def adopt(tmp_path: Path, run: dict[str, object]) -> AdoptedProcess | Exit | None:
    return LocalProcessRunner().adopt(run, tmp_path / "run" / "output.log", lambda: None)


def test_an_adopted_run_is_stopped_the_same_way(tmp_path: Path, group: Group) -> None:
    proc = start_unwatched(tmp_path, group, "r-lost")
    try:
        adopted = adopt(tmp_path, {"id": "r-lost", "pid": proc.pid, "state": "running"})
        assert isinstance(adopted, AdoptedProcess) and adopted.pid == proc.pid
        leader, child = group.pid("leader"), group.pid("child")
        adopted.stop(grace_s=600)
        wait_for(lambda: group.terms("leader") == 1 and group.terms("child") == 1,
                 what="SIGTERM to reach the whole group")  # fmt: skip
        assert procfs.live(leader) and procfs.live(child) and adopted.poll() is None
        killer = adopted._killer
        adopted.stop(grace_s=0)  # a second stop changes nothing
        assert adopted._killer is killer and group.terms("leader") == 1
        # Once the grace is over (here: its timer fires), the whole group is killed.
        assert killer is not None
        killer.cancel()
        killer.function(*killer.args, **killer.kwargs)
        exit_ = wait_for(adopted.poll, what="the adopted run to end")
        wait_for(lambda: dead(leader) and dead(child), what="the group to die")
        assert exit_ == Exit(
            code=None,
            message="its process ended while no agent watched it; the exit code is unknown",
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_an_adopted_run_is_killed_after_a_short_grace(tmp_path: Path, group: Group) -> None:
    proc = start_unwatched(tmp_path, group, "r-lost")
    try:
        adopted = adopt(tmp_path, {"id": "r-lost", "pid": None, "state": "running"})
        assert isinstance(adopted, AdoptedProcess)  # found by the pid file the shell wrote
        assert adopted.pid == int((tmp_path / "run" / PID_FILE).read_text())
        leader, child = group.pid("leader"), group.pid("child")
        adopted.stop(grace_s=0.2)
        wait_for(adopted.poll, what="the adopted run to end")
        wait_for(lambda: dead(leader) and dead(child), what="the group to die")
        assert group.terms("leader") == 1 and group.terms("child") == 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_adopt_finds_a_run_lost_while_starting_by_its_run_id(tmp_path: Path, group: Group) -> None:
    proc = start_unwatched(tmp_path, group, "r-starting")
    try:
        (tmp_path / "run" / PID_FILE).unlink()
        # No pid recorded, no pid file: only a run still starting is looked for by its id.
        assert adopt(tmp_path, {"id": "r-starting", "pid": None, "state": "running"}) is None
        adopted = adopt(tmp_path, {"id": "r-starting", "pid": None, "state": "starting"})
        assert isinstance(adopted, AdoptedProcess) and adopted.pid == proc.pid
        # A pid that is another run's is not this run's.
        other = adopt(tmp_path, {"id": "r-other", "pid": proc.pid, "state": "starting"})
        assert other is None
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_an_adopted_run_that_ended_reports_its_recorded_exit(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    proc = subprocess.run(wrap(["sh", "-c", "exit 7"], folder, None), check=False)
    assert proc.returncode == 7
    gone = adopt(tmp_path, {"id": "r-done", "pid": None, "state": "running"})
    assert gone == Exit(code=7)
    (folder / EXIT_FILE).write_text("garbage\n")
    assert adopt(tmp_path, {"id": "r-done", "pid": None, "state": "running"}) is None


def test_an_adopted_runs_group_that_is_gone_already_is_no_error(tmp_path: Path) -> None:
    """The group can end between the watch's last look and a stop, or before the grace is
    over: signalling a group that is gone is not an error (an agent's timer thread would
    report it as an internal error)."""
    # A group of one process, this test's child: once reaped, nothing of it is left.
    (tmp_path / "run").mkdir()
    proc = subprocess.Popen(["sleep", "600"], env={**os.environ, "LAUNCHCTL_RUN_ID": "r-lone"},
                            start_new_session=True)  # fmt: skip
    wait_for(lambda: procfs.read(proc.pid, "environ").count(b"r-lone"), what="sleep to exec")
    adopted = adopt(tmp_path, {"id": "r-lone", "pid": proc.pid, "state": "running"})
    assert isinstance(adopted, AdoptedProcess)
    adopted.stop(grace_s=600)
    killer = adopted._killer
    assert killer is not None and killer.daemon  # never keeps an exiting agent alive
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()  # reaped: the group is gone
    wait_for(adopted.poll, what="the watch to see the run gone")
    # The watch cancels the grace's SIGKILL: it must never reach a reused group id.
    assert killer.finished.is_set()
    adopted._kill()  # the grace ends after the group did
    adopted._gone.clear()  # as if the watch had not looked yet
    adopted._killer = None
    adopted.stop(grace_s=600)  # the group ended just before the stop
    assert adopted._killer is not None
    adopted._killer.cancel()


def test_an_adopted_run_stopped_for_a_full_disk_says_so(tmp_path: Path, group: Group) -> None:
    from launchctl.runners.logfile import LOG_ERROR_FILE

    proc = start_unwatched(tmp_path, group, "r-lost")
    adopted = adopt(tmp_path, {"id": "r-lost", "pid": proc.pid, "state": "running"})
    assert isinstance(adopted, AdoptedProcess)
    note = "disk full: the run's log could not be written; the run was stopped"
    (tmp_path / "run" / LOG_ERROR_FILE).write_text(note + "\n")  # its copier's note
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert wait_for(adopted.poll, what="the adopted run to end") == Exit(code=None, message=note)
