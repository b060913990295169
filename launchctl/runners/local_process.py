"""local-process: run the entry point as a process group on this machine.

Its output goes through a pipe to a small copier process that writes it into the run's
log, masking the values of the run's secrets (``***``) on the way. The copier is its own
process, apart from the agent and from the run's group, so the run keeps running and
logging if its agent dies (another agent can take it over); it ends by itself when the
run's output ends. When the log cannot be written (a full disk), the copier stops the
run, cuts its log to free space, and leaves a note that fails the run as "disk full":
one run that fills the disk never takes the agent, or its other runs, down with it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launchctl import paths, procfs
from launchctl.errors import RunnerError
from launchctl.runners import logfile
from launchctl.runners.base import Exit, Launch
from launchctl.runners.copier import EXIT_DISK_FULL, EXIT_LOG_FAILED
from launchctl.runners.reaper import DISK_CHECK_S, reaper
from launchctl.runners.registry import register

if TYPE_CHECKING:
    from launchctl.runas import RunAs
    from launchctl.runners.spawned import SpawnedProc

# What a queue (or a launch) may set in ``resource_args.local-process``.
OPTIONS = frozenset({"env", "cpus", "memory", "gpus", "max_run_time"})

# After the run's process group is gone, how long its log copier may take to finish (a
# process that left the group can hold the pipe open); then it is stopped.
DRAIN_S = 10.0
# The copier runs as a script (see copier.py), not as `-c "import ..."`: it starts in a fifth
# of the time, and every process run starts one.
COPIER = str(Path(__file__).with_name("copier.py"))
# How long an adopted run's ended leader may stay a zombie before its code is read.
ZOMBIE_WAIT_S = 2.0
# How long an adopter waits for a live spawner that has claimed a run's start to say its
# pid (a stall that long is a stopped or swapped-out spawner).
CLAIM_WAIT_S = 60.0


# When the log cannot be written (see logfile) and the copier could not leave its note,
# its exit code says why (sysexits' EX_IOERR, and the next):
UNNOTED = {
    EXIT_LOG_FAILED: "the run's log could not be written; the run was stopped",
    EXIT_DISK_FULL: "disk full: the run's log could not be written; the run was stopped",
}


class LogCopier:
    """The copier process of one run, from the agent's side."""

    def __init__(self, proc: subprocess.Popen[bytes], out_w: int, control_w: int) -> None:
        self.proc = proc
        self.out_w: int | None = out_w  # the run's stdout and stderr
        self._control_w = control_w

    @classmethod
    def start(cls, log_path: Path, secrets: Sequence[str]) -> LogCopier:
        """Start a copier from a new pipe into ``log_path``, and give it the secret values
        to mask; ``follow`` then names the run's group.

        The values reach it through a pipe of their own (a line of JSON), never its
        command line or environment, and before the run starts: it masks from the first
        byte, whatever happens to the agent.
        """
        out_r, out_w = os.pipe()
        control_r, control_w = os.pipe()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", COPIER, str(log_path), str(control_r)],
                stdin=out_r,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(control_r,),
                start_new_session=True,  # not in the run's group, which is killed when it ends
            )
        except OSError as exc:
            for fd in (out_r, out_w, control_r, control_w):
                os.close(fd)
            raise RunnerError(
                f"could not start the log copier: {exc.strerror}", stage="agent"
            ) from None
        os.close(out_r)
        os.close(control_r)
        copier = cls(proc, out_w, control_w)
        try:
            _write_line(control_w, {"secrets": list(secrets)})
        except OSError:
            copier.abort()
            raise RunnerError(
                "the log copier ended before it got its values", stage="agent"
            ) from None
        return copier

    def close_output(self) -> None:
        """The run holds the pipe now: the copier ends when the run's output does."""
        if self.out_w is not None:
            os.close(self.out_w)
            self.out_w = None

    def follow(self, group: int, run_id: str) -> None:
        """Tell the copier the run's process group: it stops it if the log cannot be
        written (a full disk). A copier that is gone already ends the run too."""
        try:
            _write_line(self._control_w, {"group": group, "run_id": run_id})
        except OSError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
            self.abort()
            raise RunnerError(
                "the log copier ended before the run started", stage="agent"
            ) from None
        with contextlib.suppress(OSError):
            os.close(self._control_w)

    def abort(self) -> None:
        """The run did not start (or cannot be followed): end the copier."""
        self.close_output()
        with contextlib.suppress(OSError):
            os.close(self._control_w)
        self.proc.kill()
        self.proc.wait()


def _write_line(fd: int, value: dict[str, Any]) -> None:
    logfile.write_all(fd, json.dumps(value).encode("utf-8") + b"\n")


class ProcessHandle:
    """A run's process this agent started: its child (Popen: the wrapper shell), or its
    spawner's (``SpawnedProc``: the run's command itself, see ``spawned``)."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes] | SpawnedProc,
        on_exit: object,
        copier: subprocess.Popen[bytes] | None = None,
        folder: Path | None = None,
        *,
        watch_log: Path | None = None,
    ) -> None:
        self.proc = proc
        self._spawned = not isinstance(proc, subprocess.Popen)
        self._pid_started = (
            procfs.start_time(proc.pid) if isinstance(proc, subprocess.Popen) else None
        )
        self._killer: threading.Timer | None = None
        self._copier = copier
        self._folder = folder  # the run's folder, where the copier notes a failed log
        self._on_exit = on_exit
        self._stopping = threading.Lock()
        self._ended = threading.Event()  # the leader is gone
        self._reported = threading.Event()  # ... and its log holds all: poll() tells
        self._disk_full: str | None = None  # why the disk watch stopped the run
        self._log = watch_log
        self._grown_from = _size(watch_log) if watch_log is not None else 0
        shared = reaper()
        if shared is None:  # no pidfds: a thread to wait, and one to watch the disk
            threading.Thread(target=self._wait, daemon=True).start()
            if watch_log is not None:
                threading.Thread(target=self._watch_disk, daemon=True).start()
            return
        if watch_log is not None:
            shared.watch_disk(self)
        if isinstance(proc, subprocess.Popen):
            shared.follow(proc.pid, self._leader_gone)
        else:  # its spawner says when it ended, through the reaper's thread too
            proc.on_end(self._leader_gone)

    @property
    def pid(self) -> int | None:
        """The pid of the group's leader (for a spawned run, read once the spawner says)."""
        return self.proc.pid

    @property
    def pid_started(self) -> str | None:
        if isinstance(self.proc, subprocess.Popen):
            return self._pid_started
        self.proc.pid  # noqa: B018 - waits for the spawner's reply
        return self.proc.started

    def _check_disk(self) -> None:
        """A run that writes its own log: stop it when its log has filled the disk.

        Every ``DISK_CHECK_S``: when the log's file system has no room left and the log
        grew since the disk last had room, the run is what filled it (or what is trying to
        write to a full disk, as the copier would see): it is stopped, its log cut to give
        the space back, and it fails as "disk full".
        """
        log = self._log
        if log is None or self._ended.is_set() or self._disk_full is not None:
            return
        size = _size(log)
        if not logfile.no_room(log.parent):
            self._grown_from = size
        elif size > self._grown_from:
            self._stop_for_full_disk(log)

    def _watch_disk(self) -> None:
        while not self._ended.wait(DISK_CHECK_S) and self._disk_full is None:
            self._check_disk()

    def _stop_for_full_disk(self, log: Path) -> None:
        exc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._disk_full = logfile.failure(exc)
        self._signal_group(signal.SIGKILL)
        try:
            fd = logfile.open_log(log, append=True)
        except OSError:
            return
        try:
            self._disk_full = logfile.give_back_space(fd, log, exc)
        finally:
            os.close(fd)

    def _wait(self) -> None:
        """Without a reaper: wait in this thread, then for the copier, then report."""
        self.proc.wait()
        self._end_group()
        if self._copier is not None:
            try:
                self._copier.wait(timeout=DRAIN_S)
            except subprocess.TimeoutExpired:  # held open by a process that left the group
                self._copier.kill()
                self._copier.wait()
        self._report()

    def _leader_gone(self) -> None:
        """In the reaper: the leader ended (its pidfd is readable, so this wait does not
        block). The exit is reported only once the log holds everything the run printed:
        the copier ends at the end of the output, when the last process holding it is gone."""
        self.proc.wait()
        self._end_group()
        copier = self._copier
        shared = reaper()
        if copier is None or copier.poll() is not None or shared is None:
            self._report()
            return
        shared.drain_by(self, time.monotonic() + DRAIN_S)
        try:
            shared.follow(copier.pid, self._copier_gone)
        except ProcessLookupError:  # pragma: no cover - reaped meanwhile
            self._copier_gone()

    def _copier_late(self) -> None:
        """The copier is held open by a process that left the group: it is stopped."""
        if self._copier is not None and not self._reported.is_set():
            self._copier.kill()  # its pidfd then reports it gone

    def _copier_gone(self) -> None:
        if self._reported.is_set():
            return
        if self._copier is not None:
            self._copier.wait()
        shared = reaper()
        if shared is not None:
            shared.drained(self)
        self._report()

    def _end_group(self) -> None:
        with self._stopping:  # a stop now or later starts no timer
            self._ended.set()
            if self._killer is not None:
                self._killer.cancel()
        # The leader is gone; end anything it left behind in its group. (A spawner did,
        # before it reaped the leader: its pid may be anyone's now.)
        if not self._spawned:
            self._signal_group(signal.SIGKILL)

    def _report(self) -> None:
        shared = reaper() if self._log is not None else None
        if shared is not None:  # ended: no more disk checks (issue 17: nor kept till then)
            shared.unwatch_disk(self)
        self._reported.set()
        if callable(self._on_exit):
            self._on_exit()

    def _signal_group(self, sig: int) -> None:
        pid = self.proc.pid
        if pid is None or (self._spawned and self.proc.returncode is not None):
            return  # it never started, or its spawner reaped it: the pid may be reused
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)

    def release(self) -> None:
        """Nothing to free: the pid and exit-code files stay with the run's log."""

    def poll(self) -> Exit | None:
        if not self._reported.is_set():
            return None
        if not isinstance(self.proc, subprocess.Popen) and self.proc.failure is not None:
            return Exit(code=None, message=self.proc.failure)  # never started, or lost
        code = self.proc.returncode
        if code is None:  # pragma: no cover - reported only once reaped
            return None
        if self._copier is not None and self._copier.returncode in UNNOTED:
            # The copier stopped the run: its log could not be written (a full disk).
            noted = logfile.read_note(self._folder) if self._folder is not None else None
            return Exit(code=None, message=noted or UNNOTED[self._copier.returncode])
        if self._disk_full is not None:  # the disk watch stopped the run
            return Exit(code=None, message=self._disk_full)
        if code < 0:
            sig = -code
            return Exit(code=None, signal=sig, message=f"killed by {signal.Signals(sig).name}")
        return Exit(code=code, message=signal_code_note(code))

    def stop(self, grace_s: float) -> None:
        with self._stopping:
            if self._ended.is_set() or self._killer is not None:
                return  # its group is gone (its log may still be draining): nothing to stop
            self._signal_group(signal.SIGTERM)
            self._killer = threading.Timer(grace_s, self._signal_group, args=(signal.SIGKILL,))
            self._killer.daemon = True
            self._killer.start()


def signal_code_note(code: int) -> str | None:
    """The reason for exit code 128+N, the code the wrapper shell records for a command
    killed by signal N (a shell cannot tell it from an exit with that code): it names the
    signal, so an out-of-memory kill (137) reads as one. None for other codes."""
    try:
        name = signal.Signals(code - 128).name if 128 < code < 128 + 65 else None
    except ValueError:
        name = None
    if name is None:
        return None
    hint = ", as the out-of-memory killer sends" if name == "SIGKILL" else ""
    return f"exit code {code} (that of a process killed by {name}{hint})"


PID_FILE = "pid"
EXIT_FILE = "exit_code"


def wrap(
    command: Sequence[str], folder: Path, memory: int | None, *, in_place: bool = False
) -> list[str]:
    """Run ``command`` under a small shell that records its pid and exit code in ``folder``.

    They outlive the agent: an agent that restarts after a crash finds the process by
    its pid, and reads how it ended from the file. A memory limit is an address-space
    ulimit on the shell, so it covers everything the run starts. ``in_place``: the shell
    runs as a run_as user, who may write the two files the agent made for it but nothing
    else in the run's folder.
    """
    pid_file = shlex.quote(str(folder / PID_FILE))
    exit_file = shlex.quote(str(folder / EXIT_FILE))
    limit = f"ulimit -v {max(1, memory // 1024)} || exit 125; " if memory is not None else ""
    # A stop is SIGTERM to the whole group, then SIGKILL after the grace. The shell (the
    # group's leader) must outlive that SIGTERM: were it to die at once, the runner would
    # take the leader's end for the run's and SIGKILL the group before the grace was over.
    # A trap with an action (not an ignored signal) leaves SIGTERM at its default in the
    # command, and runs only once the command has ended. The shell's own stderr (where it
    # would say "Terminated") goes nowhere: the command gets the run's back in its own
    # process (kept on fd 3 meanwhile), so the shell's report of its end is never logged.
    trap = "trap : TERM; "
    run = 'exec 3>&2 2>/dev/null; (exec 2>&3 3>&-; exec "$@"); code=$?; '
    if in_place:
        script = (
            f"{trap}echo $$ > {pid_file}; : > {exit_file}; {limit}"
            f"{run}"
            f"echo $code > {exit_file}; exit $code"
        )
    else:
        # No external command besides the run's own (no rm, no mv: each was a fork and an
        # exec per run). The runner removes both files of an earlier attempt before it
        # starts the shell, and the exit code is read only once the shell is gone, so a
        # plain write is whole when read. ``set -C`` (noclobber): the write creates the
        # file (O_EXCL), never writes through what the run may have put in its place.
        script = (
            f"{trap}echo $$ > {pid_file}; {limit}{run}set -C; echo $code > {exit_file}; exit $code"
        )
    return ["/bin/sh", "-c", script, "launchctl-run", *command]


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _read_small(path: Path) -> str:
    """The start of a pid or exit-code file (a run_as run may write them: never read more)."""
    with open(path, "rb") as fh:
        return fh.read(64).decode("ascii", "replace").strip()


def _belongs_to(pid: int, run_id: str) -> bool:
    """Whether ``pid`` is alive and is this run's process (not a zombie, not a reused pid)."""
    if not procfs.live(pid):
        return False
    return f"LAUNCHCTL_RUN_ID={run_id}".encode() in procfs.read(pid, "environ").split(b"\0")


def _recorded_exit(folder: Path) -> Exit | None:
    try:
        text = _read_small(folder / EXIT_FILE)
    except OSError:
        return None
    if not text.lstrip("-").isdigit():
        return None
    return Exit(code=int(text), message=signal_code_note(int(text)))


def _claimed_pid(folder: Path, starting: bool) -> int | None:
    """The pid in the run's pid file, for a run whose pid was not recorded.

    A spawner claims a run's start by creating that file (O_EXCL) before it starts the
    run (``claimed SPAWNER_PID START_TIME``), and writes the pid (or ``failed``) once it
    has. A run still ``starting`` with no file is claimed here instead (``adopted``): a
    spawner that has its request but has not got to it yet then refuses it, so the run,
    requeued, never also starts there. A start under way (a claim whose spawner lives, or
    a file not written yet) is read again, for ``CLAIM_WAIT_S`` at most.
    """
    path = folder / PID_FILE
    deadline = time.monotonic() + CLAIM_WAIT_S
    while True:
        try:
            text = _read_small(path)
        except FileNotFoundError:
            if not starting:
                return None
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except FileExistsError:
                continue  # a spawner claimed it just now: read it again
            except OSError:
                return None
            try:
                os.write(fd, b"adopted\n")
            finally:
                os.close(fd)
            return None
        except OSError:
            return None
        if text.isdigit():
            return int(text)
        if text.startswith("claimed "):
            claimer = text.split()
            alive = len(claimer) == 3 and claimer[1].isdigit() and procfs.live(int(claimer[1]))
            if not alive or procfs.start_time(int(claimer[1])) != claimer[2]:
                return None  # its spawner died mid-start: the caller looks for the run
        elif text:
            return None  # it failed to start, or another adopter claimed it
        elif time.monotonic() > deadline - CLAIM_WAIT_S + 1.0:
            return None  # empty for a second: a claim whose spawner could not say who
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)


def _check_executable(program: str, launch: Launch) -> str:
    """Say "command not found" plainly, rather than the wrapper shell's exit code 127.
    Returns where it is (the spawner starts that file: no search of the PATH of its own)."""
    import shutil

    if "/" in program:
        path = Path(program) if Path(program).is_absolute() else launch.workdir / program
        if not path.exists():
            raise RunnerError(f"command not found: {program}")
        if not os.access(path, os.X_OK):
            raise RunnerError(f"permission denied running {program}")
        return str(path)
    search = launch.env.get("PATH", os.defpath)
    found = _FOUND.get((program, search))
    if found is not None and os.access(found, os.X_OK) and not os.path.isdir(found):
        return found  # where it was found before, and still there (two syscalls, not a search)
    found = shutil.which(program, path=search)
    if found is None:
        raise RunnerError(f"command not found: {program}")
    if len(_FOUND) >= 256:
        _FOUND.clear()
    _FOUND[(program, search)] = found
    return found


# (program, PATH) -> where ``_check_executable`` last found it (issue 17: a search of the
# PATH per run was a stat per folder on it).
_FOUND: dict[tuple[str, str], str] = {}


def _find_by_run_id(run_id: str) -> int | None:
    """The oldest live process of this run (its wrapper shell, the group leader), if any."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _belongs_to(int(entry.name), run_id):
            found.append(int(entry.name))
    return min(found) if found else None


def _group_leader(pid: int) -> int:
    with contextlib.suppress(OSError):
        return os.getpgid(pid)
    return pid


class AdoptedProcess:
    """A run's process group left behind by a lost agent: not our child, so we watch /proc."""

    def __init__(self, pid: int, run_id: str, folder: Path, on_exit: Callable[[], None]) -> None:
        self.pid: int | None = pid
        self.pid_started = procfs.start_time(pid)
        self._run_id = run_id
        self._folder = folder
        self._killer: threading.Timer | None = None
        self._gone = threading.Event()
        self._watch = threading.Thread(target=self._poll_loop, args=(on_exit,), daemon=True)
        self._watch.start()

    def _poll_loop(self, on_exit: Callable[[], None]) -> None:
        while _belongs_to(self.pid or 0, self._run_id):
            time.sleep(0.2)
        # A spawner writes the exit code of its run before it reaps it: while the run is
        # a zombie, its code may be on its way (a wrapper shell wrote it before it ended).
        deadline = time.monotonic() + ZOMBIE_WAIT_S
        while self._zombie() and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._killer is not None:
            self._killer.cancel()
        self._gone.set()
        on_exit()

    def _zombie(self) -> bool:
        return self.pid is not None and procfs.start_time(self.pid) == self.pid_started

    def release(self) -> None:
        """Nothing to free: the pid and exit-code files stay with the run's log."""

    def poll(self) -> Exit | None:
        if not self._gone.is_set():
            return None
        if noted := logfile.read_note(self._folder):  # its copier stopped it: a full disk
            return Exit(code=None, message=noted)
        return _recorded_exit(self._folder) or Exit(
            code=None,
            message="its process ended while no agent watched it; the exit code is unknown",
        )

    def stop(self, grace_s: float) -> None:
        if self._gone.is_set() or self._killer is not None or self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGTERM)
        self._killer = threading.Timer(grace_s, self._kill)
        self._killer.daemon = True
        self._killer.start()

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.pid is not None:
                os.killpg(self.pid, signal.SIGKILL)


@register(options=OPTIONS)
class LocalProcessRunner:
    resource = "local-process"

    def adopt(
        self,
        run: dict[str, Any],
        log_path: Path,
        on_exit: Callable[[], None],
        secrets: Sequence[str] = (),
    ) -> AdoptedProcess | Exit | None:
        """Find a lost agent's run: by its recorded pid (or the pid file the wrapper wrote).

        Its output needs no new masking: a run with secrets writes through its own copier
        process, which outlives the agent."""
        folder = log_path.parent
        pid = run.get("pid")
        starting = run.get("state") == "starting"
        if pid is None:
            pid = _claimed_pid(folder, starting)
        if pid is None or not _belongs_to(pid, run["id"]):
            # Lost between starting the process and recording it: look for it by its run id.
            pid = _find_by_run_id(run["id"]) if starting else pid
        if pid is not None and _belongs_to(pid, run["id"]):
            return AdoptedProcess(_group_leader(pid), run["id"], folder, on_exit)
        if pid is not None:  # ended: a spawner writes the code of its run before it reaps it
            deadline = time.monotonic() + ZOMBIE_WAIT_S
            while procfs.zombie(pid) and time.monotonic() < deadline:
                time.sleep(0.01)
        return _recorded_exit(folder)

    def start(self, launch: Launch) -> ProcessHandle:
        if not launch.command:
            raise RunnerError("the run has no command to execute", stage="agent")
        folder = launch.log_path.parent
        if not launch.fresh and not os.path.isdir(folder):  # a stat, not an mkdir that fails
            folder.mkdir(parents=True, exist_ok=True)
        exe = _check_executable(launch.command[0], launch)
        limits = launch.limits
        if launch.run_as is not None:
            _files_for(folder, launch.run_as)
        # What an earlier attempt left: a note, and (its own shell made them) its pid and
        # exit code, which the shell writes anew (run_as: the two files made above, kept).
        # A folder made for this attempt has none (issue 17: three failed unlinks a run).
        stale = [logfile.LOG_ERROR_FILE] + ([] if launch.run_as else [PID_FILE, EXIT_FILE])
        for name in [] if launch.fresh else stale:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, name))
        if not launch.secrets and _spawns(launch):
            return _spawn(launch, folder, exe)
        command = wrap(launch.command, folder, limits.memory, in_place=launch.run_as is not None)
        if not launch.secrets:
            # Nothing to mask: the run writes its log itself (no copier to start: a trivial
            # run costs milliseconds), and a watch of the log's disk stands in for the
            # copier's write errors (see ProcessHandle._watch_disk).
            proc = _popen(command, launch, None)
            if limits.cpus is not None:
                _pin_cpus(proc.pid, limits.cpus)
            return ProcessHandle(proc, launch.on_exit, None, folder, watch_log=launch.log_path)
        # With secrets, the output goes through a copier that masks them, and that sees a
        # full disk (the run could ignore its own write errors, and fill the disk for ever).
        copier = LogCopier.start(launch.log_path, launch.secrets)
        try:
            proc = _popen(command, launch, copier.out_w)
        except RunnerError:
            copier.abort()
            raise
        finally:
            copier.close_output()
        copier.follow(proc.pid, launch.run["id"])
        if limits.cpus is not None:
            _pin_cpus(proc.pid, limits.cpus)
        return ProcessHandle(proc, launch.on_exit, copier.proc, folder)


def _spawns(launch: Launch) -> bool:
    """Whether this run starts through the agent's spawner rather than a wrapper shell
    (issue 17): the agent uses one, and the run needs nothing only a shell of its own
    gives it (an address-space limit, another user's uid)."""
    from launchctl.runners import spawned

    return (
        spawned.enabled()
        and launch.limits.memory is None
        and launch.run_as is None
        and spawned.available()
        and reaper() is not None
    )


def _spawn(launch: Launch, folder: Path, exe: str) -> ProcessHandle:
    """Start the run's command itself through the spawner, which records its exit code
    (as the wrapper shell would have) and outlives the agent, as the run does."""
    from launchctl.runners import spawned

    umask = paths.run_umask()
    cpus = _cpu_set(launch.limits.cpus) if launch.limits.cpus is not None else None
    request = (
        list(launch.command), dict(launch.env), str(launch.workdir), str(launch.log_path),
        os.path.join(folder, PID_FILE), os.path.join(folder, EXIT_FILE),
        -1 if umask is None else umask, cpus, exe,
    )  # fmt: skip
    shared = reaper()
    assert shared is not None  # ``_spawns`` checked
    try:
        proc = spawned.link(shared).spawn(*request)
    except OSError:  # the spawner was lost: a new one, once
        try:
            proc = spawned.link(shared).spawn(*request)
        except OSError as exc:
            raise RunnerError(
                f"could not start the agent's spawner: {exc.strerror or exc}", stage="agent"
            ) from None
    # Its CPUs were set by the spawner before the run started: its children have them too.
    return ProcessHandle(proc, launch.on_exit, None, folder, watch_log=launch.log_path)


def _files_for(folder: Path, user: RunAs) -> None:
    """The pid and exit-code files a run_as run's shell writes: made here, given to it.

    The run's folder stays the agent's (a run cannot put a link where the agent reads);
    the log is the agent's too: the run writes it through the descriptor it is given.
    """
    for name in (PID_FILE, EXIT_FILE):
        path = folder / name
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.fchown(fd, user.uid, user.gid)
        finally:
            os.close(fd)


def _popen(command: list[str], launch: Launch, out_fd: int | None) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own process group, its output to ``out_fd`` or the log.

    It gets the user's own umask back (launchctl's files are private; a run's are its
    own), and with run_as, that user's uid, gid and groups.
    """
    user = launch.run_as
    umask = paths.run_umask()
    as_user: dict[str, Any] = {}
    if user is not None:
        as_user = {"user": user.uid, "group": user.gid, "extra_groups": list(user.groups)}
    log = None
    if out_fd is None:
        # A regular file (made if missing), never a FIFO a run put in its place (its open
        # would wait for a reader for ever), nor through a link: as the spawner opens it.
        try:
            paths.make_file(launch.log_path)
            log = logfile.open_log(launch.log_path, append=True)
        except OSError as exc:
            raise RunnerError(f"cannot open the run's log: {exc.strerror or exc}") from None
    try:
        if log is not None:
            os.set_blocking(log, True)
        return subprocess.Popen(
            command,
            cwd=launch.workdir,
            env=launch.env,
            stdin=subprocess.DEVNULL,
            stdout=log if out_fd is None else out_fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so cancel reaches children
            umask=-1 if umask is None else umask,
            **as_user,
        )
    except FileNotFoundError:
        raise RunnerError(f"command not found: {launch.command[0]}") from None
    except PermissionError:
        raise RunnerError(f"permission denied running {launch.command[0]}") from None
    except OSError as exc:
        raise RunnerError(f"could not start {launch.command[0]}: {exc.strerror}") from None
    finally:
        if log is not None:
            os.close(log)


def _cpu_set(cpus: float) -> list[int]:
    """The first ``ceil(cpus)`` of the cores this agent may use."""
    import math

    return sorted(os.sched_getaffinity(0))[: max(1, math.ceil(cpus))]


def _pin_cpus(pid: int, cpus: float) -> None:
    """Limit a process to ``ceil(cpus)`` of the cores this agent may use (its children too)."""
    with contextlib.suppress(OSError):
        os.sched_setaffinity(pid, set(_cpu_set(cpus)))
