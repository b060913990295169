"""The spawner: one process per agent that starts its plain local-process runs and
records how each ended (issue 17).

Without it, every run started a wrapper shell (``local_process.wrap``) whose only jobs
were to outlive the agent and write the run's exit code beside its log; on a trivial run
that shell cost as much CPU as everything else a run needs. The spawner does the same for
every run of its agent: it is their parent, in a session of its own, so a run goes on if
its agent dies, and when the run ends the spawner writes its exit code (``exit_code``,
created, never written through a link) before it reaps it. It ends once its agent is gone
(its requests pipe closed) and its last run has ended.

The agent starts it as a script, ``python -I -S spawner.py REPLIES_FD EXITS_FD`` (no site,
no package imports: it starts in milliseconds). Its standard input carries requests, each
a 4-byte little-endian length and a ``marshal``-ed dict (the agent is the only writer):

    seq, argv, env, cwd, log, pid_file, exit_file, umask, cpus (a CPU list, or None),
    exe (optional: where the agent found ``argv[0]`` on the run's PATH)

Each run's start is claimed by creating its ``pid_file`` (O_EXCL), which says ``claimed
SPAWNER_PID START_TIME`` until the run's pid (or ``failed``) replaces it. An agent that
takes over a run still ``starting`` claims the same file when it finds none, so a request
that waited here while its agent was lost is refused (``E seq 0 claimed``) rather than
started beside the run requeued there.

A start thread reads the requests and starts them in the order they came
(``posix_spawn`` waits for the run's exec), while the main thread goes on reaping the
runs that end (issue 17: with two slots, one run's end waited for the other's start).
A run is started with ``os.posix_spawn`` (issue 17: ``subprocess.Popen``'s own Python
cost a tenth of the spawner's time a run): in a session of its own, its standard input
``/dev/null``, its output the log, the signals Python ignores back at their default, in
its working directory with its umask (both set in this process, by the start thread,
around the spawn: nothing else here uses either). Every descriptor of the spawner is
close-on-exec.

For each request, in order, one line on REPLIES_FD: ``S seq pid start_time`` once the
process has started (its own process group and session, output appended to ``log``,
which must be a regular file), or ``E seq errno what`` (``claimed``, ``pid``, ``log``,
``cwd`` or ``argv``) when it could not, followed by ``X seq -1`` on EXITS_FD. When a
run's process ends, its group is killed (what it left behind; the pid cannot be taken
meanwhile, the process is not reaped yet), its code written, and ``X seq code`` is
written on EXITS_FD. A process killed by signal N gets code 128+N, as a shell records
it.
"""

from __future__ import annotations

import contextlib
import errno
import marshal
import os
import selectors
import signal
import stat
import struct
import sys
import threading
from collections.abc import Iterator
from typing import Any

HEADER = struct.Struct("<I")
MAX_REQUEST = 64 << 20  # a request larger than this is not one the agent wrote
POLL_S = 0.05  # how often a run with no pidfd is looked at


def start_time(pid: int) -> str:
    """The kernel's start time of ``pid``, as ``launchctl.procfs.start_time`` reads it."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return "-"
    try:
        fields = os.read(fd, 4096).rpartition(b")")[2].split()
    except OSError:
        return "-"
    finally:
        os.close(fd)
    return fields[19].decode("ascii", "replace") if len(fields) > 19 else "-"


def code_of(seen: Any) -> int | None:
    """How a child ended (``os.waitid``'s result) as a shell records it: its exit code, or
    128+N for signal N. None for what is not an end."""
    if seen.si_code == os.CLD_EXITED:
        return int(seen.si_status)
    if seen.si_code in (os.CLD_KILLED, os.CLD_DUMPED):
        return 128 + int(seen.si_status)
    return None


def code_of_status(status: int) -> int:
    """``code_of`` for a ``waitpid`` status."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


# A new file, never through what a run put in its place.
CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def note(fd: int, data: bytes) -> None:
    """Make ``data`` the whole of a run's pid file (a full disk leaves it empty or as it
    was: adopters wait for a live claimer, then look for the run by its id)."""
    with contextlib.suppress(OSError):
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))


def open_log(path: str) -> int:
    """The run's log, to append to: a regular file, never through a link, and never a
    FIFO or device a run put in its place (an open of a FIFO with no reader would wait
    for ever, and every later start with it): such a log fails the start."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


# What Python's interpreter ignores (a run would inherit that), and SIGINT, which main()
# gives a handler: a run starts with each at its default, as under a shell.
DEFAULT_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGPIPE", "SIGXFSZ", "SIGXFZ", "SIGINT")
    if hasattr(signal, name)
)


def executable(name: str, env: dict[str, str]) -> str:
    """Where ``name`` is found on the run's own PATH, as ``execvpe`` looks (a name with a
    slash: as it is, from the run's working directory). Not found: ENOENT."""
    if "/" in name:
        return name
    for folder in env.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(folder or ".", name)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    raise FileNotFoundError(errno.ENOENT, "not found", name)


def write_code(path: str, code: int) -> None:
    """The run's exit code beside its log: a new file (O_EXCL: never through what the run
    put in its place), as the wrapper shell's ``set -C`` write did."""
    with contextlib.suppress(OSError):
        fd = os.open(path, CREATE, 0o600)
        try:
            # 0600 whatever the umask: the start thread sets a run's own around its spawn
            os.fchmod(fd, 0o600)
            os.write(fd, b"%d\n" % code)
        finally:
            os.close(fd)


class Spawner:
    """The main thread reaps (``serve``: it waits on the pidfds of the runs); a start
    thread reads the agent's requests and starts each in turn, and adds the run's pidfd
    to what the main thread waits on (issue 17: no hand-over of each request, nor of each
    start, between the two; the main thread wakes once a run, at its end)."""

    def __init__(self, replies: int, exits: int, requests: int = 0, keep: int = -1) -> None:
        self.requests_fd = requests
        self.keep_fd = keep  # a socket on which the agent hands over descriptors to close
        self.claimer = f"claimed {os.getpid()} {start_time(os.getpid())}\n".encode()
        self.replies: int | None = replies
        self.exits: int | None = exits
        self.selector = selectors.DefaultSelector()
        self.open = True  # the agent may still send requests (the start thread reads them)
        # (seq, pid, exit file) of the runs started, by pidfd: the start thread adds one
        # before the selector has its pidfd, the main thread takes it out at its end.
        self.running: dict[int, tuple[int, int, str]] = {}
        # Runs with no pidfd (the descriptor limit was reached), under ``lock``: looked at
        # every POLL_S.
        self.unwatched: list[tuple[int, int, str]] = []
        self.lock = threading.Lock()
        self.say_lock = threading.Lock()
        # Where the start thread goes back to after each start (in its own process, /).
        self.home = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        # The start thread wakes the main thread: the agent is gone, or a run has no pidfd.
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)

    def say(self, which: str, line: str) -> None:
        """A line to the agent; once it is gone (a closed pipe), no more: runs go on. Both
        threads write the exits pipe: a line is written whole, and a lost pipe closed once."""
        data = line.encode() + b"\n"
        with self.say_lock:
            fd = self.replies if which == "replies" else self.exits
            if fd is None:
                return
            try:
                while data:
                    data = data[os.write(fd, data) :]
            except OSError:
                with contextlib.suppress(OSError):
                    os.close(fd)
                if which == "replies":
                    self.replies = None
                else:
                    self.exits = None

    def starts(self) -> None:
        """The start thread: each request in turn (see ``spawn``), until the agent is gone
        (its pipe closed) or writes what it never writes; then the main thread is told."""
        try:
            for request in self.requests():
                try:
                    self.spawn(request)
                except Exception:  # a field of the wrong type: that run fails, the rest go on
                    self.failed(request["seq"], 0, "argv")
        finally:
            self.open = False
            self.wake()

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self.wake_w, b"\0")

    def requests(self) -> Iterator[dict[str, Any]]:
        """The agent's requests as they come (a read waits for the next)."""
        buffer = b""
        while True:
            try:
                chunk = os.read(self.requests_fd, 1 << 20)
            except InterruptedError:  # pragma: no cover - retried by Python itself
                continue
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while len(buffer) >= HEADER.size:
                (size,) = HEADER.unpack_from(buffer)
                if size > MAX_REQUEST:  # not the agent's: no more requests, runs go on
                    return
                if len(buffer) < HEADER.size + size:
                    break
                body = buffer[HEADER.size : HEADER.size + size]
                buffer = buffer[HEADER.size + size :]
                try:
                    request = marshal.loads(body)
                    request["seq"]
                except (ValueError, EOFError, TypeError, KeyError):
                    continue  # not a request the agent wrote: nobody waits for its reply
                yield request

    def spawn(self, request: dict[str, Any]) -> None:
        seq = request["seq"]
        # The run's start is claimed first (its pid file, created): an agent that took the
        # run over meanwhile (its own agent lost) claimed it instead, and requeued it.
        try:
            claim = os.open(request["pid_file"], CREATE, 0o600)
        except FileExistsError:
            self.failed(seq, 0, "claimed")
            return
        except OSError as exc:
            self.failed(seq, exc.errno or 0, "pid")
            return
        try:
            # Who claimed it, while it starts: an adopter waits while this spawner lives.
            note(claim, self.claimer)
            self.start(seq, request, claim)
        finally:
            os.close(claim)

    def start(self, seq: int, request: dict[str, Any], claim: int) -> None:
        """Start the run's process; its pid goes to ``claim`` (its pid file) before the
        reply, ``failed`` if it could not start."""
        try:
            log = open_log(request["log"])
        except OSError as exc:
            note(claim, b"failed\n")
            self.failed(seq, exc.errno or 0, "log")
            return
        cpus = request.get("cpus")
        mine = os.sched_getaffinity(0) if cpus else None
        umask = request["umask"]
        old_umask = os.umask(umask) if umask >= 0 else None
        try:
            if cpus:  # inherited at the spawn: the run and all it starts have only these
                os.sched_setaffinity(0, cpus)
            argv, env = request["argv"], request["env"]
            try:
                os.chdir(request["cwd"])
            except OSError as exc:
                exc.filename = request["cwd"]
                raise
            pid = os.posix_spawn(
                request.get("exe") or executable(argv[0], env),
                argv,
                env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, log, 1),
                    (os.POSIX_SPAWN_DUP2, log, 2),
                ],
                setsid=True,
                setsigdef=DEFAULT_SIGNALS,
            )
        except BaseException as exc:
            note(claim, b"failed\n")
            if not isinstance(exc, OSError):
                raise
            what = "cwd" if exc.filename == request["cwd"] else "argv"
            self.failed(seq, exc.errno or 0, what)
            return
        finally:
            os.close(log)
            os.fchdir(self.home)
            if old_umask is not None:
                os.umask(old_umask)
            if mine is not None:
                os.sched_setaffinity(0, mine)
        note(claim, b"%d\n" % pid)
        self.say("replies", f"S {seq} {pid} {start_time(pid)}")
        entry = (seq, pid, request["exit_file"])
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # no descriptor left (EMFILE): it is looked at every POLL_S instead
            with self.lock:
                self.unwatched.append(entry)
            self.wake()
            return
        self.running[pidfd] = entry  # before the selector can say it ended
        self.selector.register(pidfd, selectors.EVENT_READ, "exit")

    def failed(self, seq: int, errno: int, what: str) -> None:
        """It could not start: the reply says why, and its end comes as any other's."""
        self.say("replies", f"E {seq} {errno} {what}")
        self.say("exits", f"X {seq} -1")

    def ended(self, pidfd: int) -> None:
        seq, pid, exit_file = self.running.pop(pidfd)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        self.reap(seq, pid, exit_file)

    def reap(self, seq: int, pid: int, exit_file: str) -> None:
        """The run's leader has exited and is not reaped yet: its pid (and so its group's
        id) stays taken while the rest of its group is killed and its code written."""
        seen = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # it has: no wait
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        code = code_of(seen) if seen is not None else None
        if code is not None:
            write_code(exit_file, code)
        # Only now reaped: an adopter that sees the pid gone finds the code written.
        status = os.waitpid(pid, 0)[1]
        if code is None:  # pragma: no cover - waitid said nothing: the status
            code = code_of_status(status)
            write_code(exit_file, code)
        self.say("exits", f"X {seq} {code}")

    def look(self) -> None:
        """The runs with no pidfd: those that have exited are reaped."""
        with self.lock:
            entries = list(self.unwatched)
        for entry in entries:
            done = os.waitid(os.P_PID, entry[1], os.WEXITED | os.WNOHANG | os.WNOWAIT)
            if done is not None:
                self.reap(*entry)
                with self.lock:
                    self.unwatched.remove(entry)

    def take_over(self) -> None:
        """Descriptors the agent hands over as it leaves (its store watch): closed in a
        thread of their own, so no run's reaping waits for the kernel's teardown of a
        watch; what is not a message with descriptors is read and dropped."""
        import socket

        sock = socket.socket(fileno=os.dup(self.keep_fd))
        try:
            flags = socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC  # never a run's to inherit
            msg, fds, _flags, _addr = socket.recv_fds(sock, 64, 16, flags)
        except BlockingIOError:
            return
        except OSError:
            msg, fds = b"", []
        finally:
            sock.close()
        if not msg and not fds:  # the agent's end is closed: nothing more comes
            self.selector.unregister(self.keep_fd)
        if fds:
            threading.Thread(target=close_all, args=(fds,), name="close", daemon=True).start()

    def serve(self) -> None:
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        if self.keep_fd >= 0:
            self.selector.register(self.keep_fd, selectors.EVENT_READ, "keep")
        threading.Thread(target=self.starts, name="starts", daemon=True).start()
        while self.open or self.running or self.unwatched:
            timeout = POLL_S if self.unwatched else None
            for key, _events in self.selector.select(timeout):
                if key.data == "wake":
                    with contextlib.suppress(OSError):
                        while os.read(self.wake_r, 4096):
                            pass
                elif key.data == "keep":
                    self.take_over()
                else:
                    self.ended(key.fd)
            if self.unwatched:
                self.look()


def close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def main() -> None:
    # In a session of its own, no terminal's ^C reaches it; a SIGINT sent to it by hand
    # is ignored too (a run gets the default back: DEFAULT_SIGNALS).
    signal.signal(signal.SIGINT, lambda _sig, _frame: None)
    os.chdir("/")
    replies, exits = int(sys.argv[1]), int(sys.argv[2])
    keep = int(sys.argv[3]) if len(sys.argv) > 3 else -1
    for fd in (replies, exits, keep):  # passed to it, so inheritable: not by its runs
        if fd >= 0:
            os.set_inheritable(fd, False)
    Spawner(replies, exits, keep=keep).serve()


if __name__ == "__main__":
    main()
