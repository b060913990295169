"""Issue 17: an agent starts its plain runs through one spawner process, not a wrapper
shell per run; every guarantee the shell gave holds.

- The run's command is its group's leader; its code is what a shell would record
  (128+N for signal N, named), written beside its log, never through a link.
- It cannot reach the spawner's pipes (no inherited descriptors), and gets SIGINT at its
  default (the spawner ignores it with a handler, which an exec resets).
- A stop is SIGTERM to the whole group, then SIGKILL once the grace is over; what a run
  leaves in its group is killed when it ends.
- A command that cannot start fails saying why; a spawner that is killed loses no run:
  each ends saying its code is unknown, and the next run gets a new spawner.
- The spawner outlives its agent (tests/test_recovery.py kills the agent) and ends once
  its agent is gone and its last run has ended.

Real processes throughout, in the pytest process (the runner, as the agent uses it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from launchctl import procfs
from launchctl.runners import local_process, spawned
from launchctl.runners.base import Exit, Launch
from launchctl.runners.local_process import EXIT_FILE, LocalProcessRunner, ProcessHandle
from launchctl.store import Store
from tests.conftest import StartAgent, cli, make_script, wait_for

pytestmark = pytest.mark.skipif(
    local_process.reaper() is None, reason="no pidfds on this machine: no spawner"
)


@pytest.fixture
def link(monkeypatch: pytest.MonkeyPatch) -> Iterator[spawned.Link]:
    """A spawner of this test's own, as an agent's."""
    monkeypatch.setattr(spawned, "_ENABLED", True)
    monkeypatch.setattr(spawned, "_LINK", None)
    shared = local_process.reaper()
    assert shared is not None
    made = spawned.link(shared)
    yield made
    if made.proc.poll() is None:
        made.proc.kill()


def launch_of(folder: Path, command: list[str], run_id: str = "r-spawned") -> Launch:
    env = {**os.environ, "LAUNCHCTL_RUN_ID": run_id}
    return Launch(run={"id": run_id}, entrypoint=command, args=[], env=env,
                  workdir=folder, log_path=folder / "run" / "output.log")  # fmt: skip


def start(folder: Path, command: list[str]) -> ProcessHandle:
    (folder / "run").mkdir(parents=True, exist_ok=True)
    (folder / "run" / "output.log").touch()
    handle = LocalProcessRunner().start(launch_of(folder, command))
    assert isinstance(handle, ProcessHandle) and not isinstance(handle.proc, subprocess.Popen)
    return handle


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _in_group(pid: int, group: int) -> bool:
    try:
        return os.getpgid(pid) == group and procfs.live(pid)
    except OSError:
        return False


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return int(stat.rpartition(b")")[2].split()[1])


def test_a_spawned_run_is_its_groups_leader_and_ends_with_its_code(
    tmp_path: Path, link: spawned.Link
) -> None:
    code = "import os, time; print(os.getpid(), os.getpgid(0)); time.sleep(0.3); exit(3)"
    handle = start(tmp_path, py(code))
    pid = handle.pid
    assert pid is not None and parent_of(pid) == link.proc.pid  # the spawner's child
    assert handle.pid_started == procfs.start_time(pid)
    assert wait_for(handle.poll, what="the run's end") == Exit(code=3)
    shared = local_process.reaper()
    assert shared is not None and handle not in shared._watches  # not kept once ended
    log = (tmp_path / "run" / "output.log").read_text()
    assert log.split() == [str(pid), str(pid)]  # its own pid is its group's
    assert (tmp_path / "run" / EXIT_FILE).read_text() == "3\n"


@pytest.mark.parametrize(
    ("sig", "name"), [(signal.SIGKILL, "SIGKILL"), (signal.SIGSEGV, "SIGSEGV")]
)
def test_a_run_killed_by_a_signal_gets_the_shells_code_named(
    tmp_path: Path, link: spawned.Link, sig: int, name: str
) -> None:
    handle = start(tmp_path, py(f"import os; os.kill(os.getpid(), {int(sig)})"))
    exit_ = wait_for(handle.poll, what="the run's end")
    assert exit_.code == 128 + sig and exit_.message is not None and name in exit_.message
    assert (tmp_path / "run" / EXIT_FILE).read_text() == f"{128 + sig}\n"


def test_a_run_gets_no_descriptor_of_the_spawner_and_sigint_at_its_default(
    tmp_path: Path, link: spawned.Link
) -> None:
    code = (
        "import os, signal;"
        "print(sorted(int(f) for f in os.listdir('/proc/self/fd')));"
        "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    )
    handle = start(tmp_path, py(code))
    assert wait_for(handle.poll, what="the run's end") == Exit(code=0)
    fds, default = (tmp_path / "run" / "output.log").read_text().splitlines()
    # 0, 1, 2 and the one listdir opened: no pipe, pidfd or epoll of the spawner's.
    assert len(fds.strip("[]").split(",")) == 4
    assert default == "True"  # Python's own handler: SIGINT was at its default at exec


def test_a_run_starts_as_under_a_shell_signals_umask_folder_and_its_own_path(
    tmp_path: Path, link: spawned.Link
) -> None:
    """The spawner starts runs with ``posix_spawn`` (issue 17), which gives what ``Popen``
    gave: no signal ignored at the exec (Python ignores SIGPIPE and SIGXFSZ: inherited,
    ``yes | head`` in a run would never end), the umask asked for, the run's working
    folder, and its command found on the run's own PATH, not the spawner's. The spawner
    itself goes back to ``/`` after each start: it holds no run's folder."""
    tools, work = tmp_path / "tools", tmp_path / "work"
    tools.mkdir()
    work.mkdir()
    tool = make_script(tools, "lab-tool", "#!/bin/sh\ngrep SigIgn /proc/self/status\numask\npwd\n")
    tool.chmod(0o755)
    log = tmp_path / "log"
    log.touch()
    proc = link.spawn(
        ["lab-tool"], {"PATH": f"{tools}:/usr/bin:/bin"}, str(work), str(log),
        str(tmp_path / "pid"), str(tmp_path / "code"), 0o027,
    )  # fmt: skip
    wait_for(lambda: proc.poll() is not None, what="the run's end")
    assert proc.returncode == 0, log.read_text()
    ignored, umask, cwd = log.read_text().splitlines()
    # Ignored: what a shell started from here ignores too (what this process inherited:
    # CI may start it with SIGQUIT ignored), and signals 32 and 33, which glibc's
    # posix_spawn sets ignored in its child (as Python's own posix_spawn leaves them): the
    # C library's internal signals, reserved by glibc and musl alike, whose handlers every
    # program's C library sets. Not SIGPIPE nor SIGXFSZ, which Python ignores.
    shell = subprocess.run(["sh", "-c", "grep SigIgn /proc/self/status"], capture_output=True,
                           text=True, check=True).stdout  # fmt: skip
    internal = (1 << 31) | (1 << 32)
    inherited = int(shell.split()[1], 16) & ~internal
    assert int(ignored.split()[1], 16) & ~internal == inherited
    assert not inherited & ((1 << (signal.SIGPIPE - 1)) | (1 << (signal.SIGXFSZ - 1)))
    assert umask == "0027" and cwd == str(work)
    assert os.readlink(f"/proc/{link.proc.pid}/cwd") == "/"
    missing = link.spawn(
        ["lab-tool"], {"PATH": "/usr/bin:/bin"}, str(work), str(log),
        str(tmp_path / "pid2"), str(tmp_path / "code2"), -1,
    )  # fmt: skip
    wait_for(lambda: missing.poll() is not None or missing.failure, what="the refusal")
    assert missing.pid is None and missing.failure == "command not found: lab-tool"


def test_the_spawner_writes_no_exit_code_through_a_link_the_run_planted(
    tmp_path: Path, link: spawned.Link
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    plant = f"import os; os.symlink({str(victim)!r}, {str(tmp_path / 'run' / EXIT_FILE)!r})"
    handle = start(tmp_path, py(plant))
    assert wait_for(handle.poll, what="the run's end") == Exit(code=0)
    assert victim.read_text() == "untouched\n"
    assert os.path.islink(tmp_path / "run" / EXIT_FILE)


def test_a_stop_reaches_the_whole_group_and_what_a_run_leaves_is_killed(
    tmp_path: Path, link: spawned.Link
) -> None:
    # The leader ignores SIGTERM for the grace; its child notes it and goes on.
    marks = tmp_path / "marks"
    note = f"lambda text: open({str(marks)!r}, 'a').write(text)"
    child = (
        f"import os, signal, time; note = {note};"
        "signal.signal(signal.SIGTERM, lambda *a: note('child TERM\\n'));"
        "note(f'child {os.getpid()}\\n'); time.sleep(600)"
    )
    leader = (
        "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        f"subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(600)"
    )
    handle = start(tmp_path, py(leader))
    wait_for(lambda: marks.exists() and "child " in marks.read_text(), what="the child")
    child_pid = int(marks.read_text().split()[1])
    handle.stop(grace_s=0.5)
    wait_for(lambda: "child TERM" in marks.read_text(), what="SIGTERM to reach the child")
    exit_ = wait_for(handle.poll, what="the run to end after its grace")
    assert exit_.code == 137  # SIGKILL after the grace
    wait_for(lambda: not procfs.live(child_pid), what="the child to be killed")


def test_a_command_that_cannot_start_fails_saying_why(
    tmp_path: Path, link: spawned.Link, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found when checked, gone by the time the spawner starts it.
    program = tmp_path / "prog"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "output.log").touch()
    launch = launch_of(tmp_path, [str(program)])
    real = local_process._check_executable

    def check_then_remove(name: str, given: Launch) -> None:
        real(name, given)
        program.unlink()

    monkeypatch.setattr(local_process, "_check_executable", check_then_remove)
    handle = LocalProcessRunner().start(launch)
    assert handle.pid is None
    exit_ = wait_for(handle.poll, what="the failed start to be told")
    assert exit_ == Exit(code=None, message=f"command not found: {program}")
    assert not (tmp_path / "run" / EXIT_FILE).exists()


def test_a_log_a_run_made_a_fifo_fails_its_next_start_and_holds_up_no_other_run(
    tmp_path: Path, link: spawned.Link
) -> None:
    """A run may replace its own log (its folder is its agent user's) with a FIFO; its next
    attempt's start must fail saying so, not wait for a reader for ever (it held up every
    run of the agent: the spawner stopped reaping). A run's end is told while another's
    start is under way: starts have a thread of their own."""
    slow = start(tmp_path / "a", py("import time; time.sleep(0.5)"))
    fifo = tmp_path / "b"
    (fifo / "run").mkdir(parents=True)
    os.mkfifo(fifo / "run" / "output.log")
    blocked = LocalProcessRunner().start(launch_of(fifo, ["true"], run_id="r-fifo"))
    failed = wait_for(blocked.poll, timeout=10, what="the start with a FIFO for a log to fail")
    assert failed.code is None and "cannot open the run's log" in (failed.message or "")
    after = start(tmp_path / "c", ["true"])
    assert wait_for(after.poll, timeout=10, what="the next run to end") == Exit(code=0)
    assert wait_for(slow.poll, timeout=10, what="the first run to end") == Exit(code=0)


def test_a_fifo_log_fails_a_start_through_the_wrapper_shell_too(tmp_path: Path) -> None:
    """A run with a memory limit starts through its own wrapper shell, its log opened by
    the agent: a FIFO there fails the start at once, rather than hold the agent's loop."""
    from dataclasses import replace

    from launchctl.guardrails import Limits
    from launchctl.runners.base import RunnerError

    (tmp_path / "run").mkdir()
    os.mkfifo(tmp_path / "run" / "output.log")
    launch = replace(launch_of(tmp_path, ["true"]), limits=Limits(memory=1 << 30))
    with pytest.raises(RunnerError, match="cannot open the run's log"):
        LocalProcessRunner().start(launch)


def test_a_killed_spawner_loses_no_run_and_the_next_run_gets_a_new_one(
    tmp_path: Path, link: spawned.Link
) -> None:
    # It leaves a child in its group: that goes too once the run ends (as QA found, it did
    # not when the spawner was lost).
    leader = "import subprocess, time; subprocess.Popen(['sleep', '30']); time.sleep(0.5)"
    handle = start(tmp_path / "a", py(leader))
    pid = handle.pid
    assert pid is not None
    link.proc.kill()
    exit_ = wait_for(handle.poll, what="the orphaned run's end")
    assert exit_.code is None and exit_.message is not None
    assert "exit code is unknown" in exit_.message
    assert not procfs.live(pid)
    left = [p for p in os.listdir("/proc") if p.isdigit() and _in_group(int(p), pid)]
    assert not left, left
    after = start(tmp_path / "b", py("raise SystemExit(4)"))
    assert wait_for(after.poll, what="the next run's end") == Exit(code=4)
    now = spawned.current()
    assert now is not None and now is not link and now.proc.poll() is None


def test_the_spawner_ends_once_its_agent_is_gone_and_its_runs_have_ended(
    tmp_path: Path,
) -> None:
    """An agent (a process of its own here) starts a run and exits at once: the spawner
    stays the run's parent, writes its code, then ends."""
    script = f"""
import os, sys
from pathlib import Path
from launchctl.runners import spawned
from launchctl.runners.base import Launch
from launchctl.runners.local_process import LocalProcessRunner
spawned.enable()
folder = Path({str(tmp_path)!r})
(folder / "run").mkdir()
(folder / "run" / "output.log").touch()
command = ["sh", "-c", "sleep 0.5; exit 6"]
handle = LocalProcessRunner().start(Launch(run={{"id": "r"}}, entrypoint=command, args=[],
    env=dict(os.environ), workdir=folder, log_path=folder / "run" / "output.log"))
print(handle.pid, spawned.current().proc.pid, flush=True)
os._exit(0)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    run_pid, spawner_pid = (int(word) for word in out.stdout.split())
    assert procfs.live(spawner_pid)
    wait_for(lambda: (tmp_path / "run" / EXIT_FILE).exists(), what="the run's code")
    assert (tmp_path / "run" / EXIT_FILE).read_text() == "6\n"
    wait_for(lambda: not procfs.live(spawner_pid), what="the spawner to end")
    assert not procfs.live(run_pid)


def test_the_spawner_closes_what_its_agent_hands_over(tmp_path: Path, link: spawned.Link) -> None:
    """Issue 17: a leaving agent hands its store watch to its spawner, which closes it (the
    kernel's teardown of a watch is then the spawner's wait, not the agent's exit's). Seen
    here with a pipe: its reader gets end-of-file once the spawner has closed the copy it
    was handed, this process's own being closed. A run started meanwhile never gets it."""
    import select

    from launchctl.agent.wake import watch_descriptors

    read_end, write_end = os.pipe()
    assert link.hand_over([write_end])
    os.close(write_end)
    assert select.select([read_end], [], [], 30)[0], "the spawner never closed it"
    assert os.read(read_end, 1) == b""
    os.close(read_end)
    assert not link.hand_over([])  # nothing to hand over: nothing sent
    handle = start(tmp_path, py("import os; print(len(os.listdir('/proc/self/fd')))"))
    assert wait_for(handle.poll, what="the run's end") == Exit(code=0)
    assert (tmp_path / "run" / "output.log").read_text().strip() == "4"
    assert all(
        os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:inotify" for fd in watch_descriptors()
    )


def test_an_agent_whose_spawner_is_killed_fails_that_run_saying_why_and_goes_on(
    store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    """Through the CLI, as a user meets it: the agent's spawner is killed under a running
    run; the run fails when its process ends (its code unknown, said), and the next run
    starts through a new spawner and finishes."""
    code = make_script(tmp_path / "code", "main.py", "import time\ntime.sleep(1)\n").parent
    first = cli("launch", "-q", "default", "-u", str(code), "-E", "python main.py",
                check=True).stdout.strip()  # fmt: skip
    start_agent("-q", "default")
    wait_for(lambda: store.runs.state(first) == "running", what="the run to start")
    pid = store.runs.get(first)["pid"]
    spawner = parent_of(pid)
    assert b"spawner.py" in Path(f"/proc/{spawner}/cmdline").read_bytes()
    os.kill(spawner, signal.SIGKILL)
    wait_for(lambda: store.runs.state(first) == "failed", what="the run to fail", timeout=30)
    run = store.runs.get(first)
    assert run["exit_code"] is None and "exit code is unknown" in run["reason"], run
    assert "spawner" in run["reason"]
    second = cli("launch", "-q", "default", "-u", str(code), "-E", "true",
                 check=True).stdout.strip()  # fmt: skip
    wait_for(lambda: store.runs.state(second) == "finished", what="the next run", timeout=30)


def test_runs_with_no_pidfd_left_are_looked_at_and_a_bad_request_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spawner itself, in this process: with no descriptor left for a pidfd (EMFILE)
    a run is still reaped and its code written; a request that is not the agent's is
    skipped, and one with a field of the wrong type fails alone."""
    import marshal
    import threading

    from launchctl.runners import spawner

    def no_fds(_pid: int) -> int:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(spawner.os, "pidfd_open", no_fds)
    requests_r, requests_w = os.pipe()
    replies_r, replies_w = os.pipe()
    exits_r, exits_w = os.pipe()
    server = spawner.Spawner(replies_w, exits_w, requests_r)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    (tmp_path / "log").touch()

    def send(request: object) -> None:
        body = marshal.dumps(request)
        os.write(requests_w, len(body).to_bytes(4, "little") + body)

    send({"no": "seq"})  # skipped: nobody waits for it
    log, x1, x2 = str(tmp_path / "log"), str(tmp_path / "x1"), str(tmp_path / "x2")
    send({"seq": 1, "argv": 5, "env": {}, "cwd": str(tmp_path), "log": log, "exit_file": x1,
          "pid_file": str(tmp_path / "p1"), "umask": -1})  # fmt: skip
    send({"seq": 2, "argv": ["sh", "-c", "exit 7"], "env": dict(os.environ),
          "cwd": str(tmp_path), "log": log, "exit_file": x2, "pid_file": str(tmp_path / "p2"),
          "umask": -1})  # fmt: skip
    os.close(requests_w)  # the agent is gone: it ends once its run has
    thread.join(timeout=30)
    assert not thread.is_alive()
    os.close(replies_w)
    os.close(exits_w)
    replies = os.read(replies_r, 4096).decode().split("\n")
    exits = os.read(exits_r, 4096).decode().split("\n")
    assert replies[0] == "E 1 0 argv" and replies[1].startswith("S 2 ")
    assert exits[:2] == ["X 1 -1", "X 2 7"]
    assert (tmp_path / "x2").read_text() == "7\n" and not (tmp_path / "x1").exists()


def test_a_run_an_adopter_claimed_is_never_started_by_the_lost_agents_spawner(
    tmp_path: Path, link: spawned.Link
) -> None:
    """Exactly once: an agent lost right after it asked its spawner to start a run; another
    agent takes the run over (still ``starting``), finds no process and no pid file, and
    claims the pid file before it requeues the run. The request, if the spawner gets to
    it only now, is refused: the command never runs here."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "output.log").touch()
    found = LocalProcessRunner().adopt(
        {"id": "r-claimed", "state": "starting"}, folder / "output.log", lambda: None
    )
    assert found is None  # never started: the agent requeues it
    assert (folder / local_process.PID_FILE).read_text() == "adopted\n"
    marker = tmp_path / "ran"
    proc = link.spawn(py(f"open({str(marker)!r}, 'w')"), dict(os.environ), str(tmp_path),
                      str(folder / "output.log"), str(folder / local_process.PID_FILE),
                      str(folder / EXIT_FILE), -1)  # fmt: skip
    assert proc.pid is None
    assert proc.failure == (
        "another agent took the run over before it started (it was requeued there)"
    )
    assert not marker.exists() and not (folder / EXIT_FILE).exists()


def test_a_started_run_has_its_pid_in_its_pid_file_for_an_adopter(
    tmp_path: Path, link: spawned.Link
) -> None:
    handle = start(tmp_path, ["sleep", "30"])
    pid = handle.pid
    assert (tmp_path / "run" / local_process.PID_FILE).read_text() == f"{pid}\n"
    found = LocalProcessRunner().adopt(
        {"id": "r-spawned", "state": "starting"}, tmp_path / "run" / "output.log", lambda: None
    )
    assert isinstance(found, local_process.AdoptedProcess) and found.pid == pid
    handle.stop(grace_s=0)
    assert wait_for(handle.poll, what="the stopped run").code == 143


def test_an_adopter_reads_the_code_of_a_run_that_is_still_a_zombie_once_it_is_written(
    tmp_path: Path,
) -> None:
    """Its spawner writes a run's code before it reaps it: an adopter that sees the
    process ended (a zombie) waits for the reaping, then reads the code."""
    import threading
    import time

    folder = tmp_path / "run"
    folder.mkdir()
    child = subprocess.Popen(["true"])  # this test is its parent: a zombie once it ends
    wait_for(lambda: procfs.zombie(child.pid), what="the child to end, unreaped")

    def spawner_late() -> None:
        time.sleep(0.3)
        (folder / EXIT_FILE).write_text("9\n")
        child.wait()

    threading.Thread(target=spawner_late, daemon=True).start()
    run = {"id": "r-zombie", "state": "running", "pid": child.pid}
    found = LocalProcessRunner().adopt(run, folder / "output.log", lambda: None)
    assert found == Exit(code=9)


def test_a_runs_code_is_written_before_its_pid_is_gone(tmp_path: Path, link: spawned.Link) -> None:
    """What an adopter relies on: once a run's pid is gone from /proc, its code is there
    (the spawner writes it, then reaps the run). Twenty quick runs, each watched closely."""
    for i in range(20):
        folder = tmp_path / str(i)
        handle = start(folder, ["true"])
        pid = handle.pid
        assert pid is not None
        while os.path.exists(f"/proc/{pid}"):
            pass
        assert (folder / "run" / EXIT_FILE).read_text() == "0\n", i
        wait_for(handle.poll, what="the run's end")


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU: nothing to pin to")
def test_a_runs_cpus_are_set_before_it_starts_so_its_first_child_has_them_too(
    tmp_path: Path, link: spawned.Link
) -> None:
    """QA found a child forked at once escaping ``cpus`` (its leader was pinned only once
    the spawner had replied); the spawner now sets them before the fork."""
    from launchctl.guardrails import Limits

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "output.log").touch()
    code = (
        "import os\npid = os.fork()\nif pid == 0:\n"
        "    print(len(os.sched_getaffinity(0)), flush=True)\n    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
    )
    launch = launch_of(tmp_path, py(code))
    launch.limits = Limits(cpus=1)
    handle = LocalProcessRunner().start(launch)
    assert wait_for(handle.poll, what="the run's end") == Exit(code=0)
    assert (tmp_path / "run" / "output.log").read_text() == "1\n"


def test_an_adopter_waits_while_the_spawner_that_claimed_a_start_lives(tmp_path: Path) -> None:
    """A claim (``claimed PID START``) by a live spawner is a start under way, however
    slow; by a dead one, a start that never happened: no wait."""
    import threading
    import time

    folder = tmp_path / "run"
    folder.mkdir()
    pid_file = folder / local_process.PID_FILE
    run = {"id": "r-claim", "state": "starting"}
    pid_file.write_text(f"claimed {os.getpid()} {procfs.start_time(os.getpid())}\n")

    def spawner_late() -> None:
        time.sleep(0.5)
        pid_file.write_text("failed\n")

    threading.Thread(target=spawner_late, daemon=True).start()
    began = time.monotonic()
    assert LocalProcessRunner().adopt(run, folder / "output.log", lambda: None) is None
    assert time.monotonic() - began >= 0.5  # it waited for the live claimer
    gone = subprocess.Popen(["true"])
    gone.wait()
    pid_file.write_text(f"claimed {gone.pid} 1\n")
    began = time.monotonic()
    assert LocalProcessRunner().adopt(run, folder / "output.log", lambda: None) is None
    assert time.monotonic() - began < 0.5
