"""The agent's side of its spawner (``spawner.py``, issue 17): one process that starts the
agent's plain local-process runs and writes each one's exit code, in place of a wrapper
shell per run.

``link()`` starts the spawner on first use (in a session of its own: it outlives the
agent, as its runs do). ``Link.spawn`` sends a request and returns at once with a
``SpawnedProc``, the Popen-like object ``local_process.ProcessHandle`` follows: its pid
is read from the spawner's reply when first asked for (by then it has long come), its
end from the spawner's exits pipe, which an agent's loop reads in its own wait
(``Link.take_exits``; the reaper thread reads it where no loop has taken it).

Only a long-lived agent uses it (``enable``): a direct launch starts one run, and a shell
starts in a millisecond where the spawner's interpreter takes tens.
"""

from __future__ import annotations

import contextlib
import functools
import marshal
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

SCRIPT = str(Path(__file__).with_name("spawner.py"))
GONE_POLL_S = 0.2  # how often a run whose spawner was lost is looked for in /proc

_ENABLED = False
_LINK: Link | None = None
_LINK_LOCK = threading.Lock()


def enable(on: bool = True) -> None:
    """Start this process's plain local-process runs through a spawner (an agent does)."""
    global _ENABLED
    _ENABLED = on


def enabled() -> bool:
    return _ENABLED


class FdWatcher(Protocol):
    """What calls back when a descriptor is readable (``launchctl.runners.reaper.Reaper``)."""

    def watch_fd(self, fd: int, then: Callable[[], None]) -> None: ...

    def unwatch_fd(self, fd: int) -> None: ...


@functools.cache
def available() -> bool:
    """Whether a spawner can be used here: it follows its runs through pidfds (Linux 5.3)."""
    if not hasattr(os, "pidfd_open") or not hasattr(os, "P_PIDFD"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return False
    return True


def current() -> Link | None:
    """This process's spawner, if it has started one."""
    return _LINK


def link(watcher: FdWatcher) -> Link:
    """This process's spawner, started (again, if the last one was lost) on first use;
    ``watcher`` reads what it says of ended runs until someone ``take_exits``."""
    global _LINK
    with _LINK_LOCK:
        if _LINK is None or _LINK.lost:
            _LINK = Link(watcher)
        else:
            _LINK.attach(watcher)
        return _LINK


def start_early() -> None:
    """Start this process's spawner now, before anything reads it (``link`` then attaches
    its watcher). The agent command does, before it loads the rest of itself (issue 17:
    the spawner's interpreter takes about 25 ms to start, and the first runs waited for
    it; now it starts beside the agent's imports). Where no spawner can run, nothing."""
    global _LINK
    if not available():
        return
    with _LINK_LOCK:
        if _LINK is None or _LINK.lost:
            _LINK = Link(None)


class SpawnedProc:
    """A run's process as the spawner started it: what ProcessHandle reads of a Popen."""

    def __init__(self, link: Link, seq: int, argv0: str, cwd: str) -> None:
        self._link = link
        self.seq = seq
        self.argv0 = argv0
        self.cwd = cwd
        self._pid: int | None = None
        self.started: str | None = None  # its start time (``procfs.start_time``)
        self.known = False  # the spawner's reply has been read (set under the reply lock)
        self.returncode: int | None = None  # as a shell records it: 128+N for signal N
        self.failure: str | None = None  # why it never started, or why its end is unknown
        self._lock = threading.Lock()
        self._ended = False
        self._on_end: Callable[[], None] | None = None

    @property
    def pid(self) -> int | None:
        if not self.known:
            self._link.collect(self)
        return self._pid

    def replied(self, pid: int | None, started: str | None, failure: str | None) -> None:
        self._pid, self.started, self.failure = pid, started, failure
        self.known = True

    def wait(self) -> int | None:
        return self.returncode

    def poll(self) -> int | None:
        return self.returncode

    def on_end(self, then: Callable[[], None]) -> None:
        """Call ``then`` once the process has ended (now, if it has)."""
        with self._lock:
            self._on_end = then
            ended = self._ended
        if ended:
            then()

    def end(self, code: int | None, failure: str | None = None) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = True
            self.returncode = code
            if failure is not None:
                self.failure = failure
            then = self._on_end
        if then is not None:
            then()


class Link:
    """One spawner process, and the runs it started that have not ended yet."""

    def __init__(self, watcher: FdWatcher | None) -> None:
        self._watcher: FdWatcher | None = None
        self.lost = False
        import socket

        requests_r, self._requests = os.pipe()
        self._replies, replies_w = os.pipe()
        self._exits, exits_w = os.pipe()
        # What the agent leaves it to close (``hand_over``): descriptors passed on a socket.
        self._keep, keep_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        kept = keep_theirs.detach()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", SCRIPT, str(replies_w), str(exits_w), str(kept)],
                stdin=requests_r,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(replies_w, exits_w, kept),
                start_new_session=True,  # apart from the agent's group: it outlives it
                cwd="/",
            )
        finally:
            for fd in (requests_r, replies_w, exits_w, kept):
                os.close(fd)
        for fd in (self._requests, self._replies, self._exits):
            os.set_inheritable(fd, False)
        os.set_blocking(self._exits, False)
        self._send_lock = threading.Lock()
        self._reply_lock = threading.Lock()
        self._seq = 0
        self._waiting: dict[int, SpawnedProc] = {}  # sent, their reply not read yet
        self._running: dict[int, SpawnedProc] = {}  # sent, not ended
        self._reply_buf = b""
        self._exit_buf = b""
        self._exit_lock = threading.Lock()
        self.taken = False  # the exits pipe is read by its taker, not the reaper thread
        if watcher is not None:
            self.attach(watcher)
        # The spawner is this process's child: reaped when it ends, never a zombie.
        threading.Thread(target=self.proc.wait, name="launchctl-spawner", daemon=True).start()

    def spawn(self, argv: list[str], env: dict[str, str], cwd: str, log: str,
              pid_file: str, exit_file: str, umask: int,
              cpus: list[int] | None = None, exe: str | None = None) -> SpawnedProc:  # fmt: skip
        with self._send_lock:
            self._seq += 1
            proc = SpawnedProc(self, self._seq, argv[0], cwd)
            request = {"seq": proc.seq, "argv": argv, "env": env, "cwd": cwd, "log": log,
                       "pid_file": pid_file, "exit_file": exit_file, "umask": umask,
                       "cpus": cpus, "exe": exe}  # fmt: skip
            body = marshal.dumps(request)
            with self._reply_lock:
                self._waiting[proc.seq] = proc
                self._running[proc.seq] = proc
            frame = len(body).to_bytes(4, "little") + body
            try:
                while frame:
                    frame = frame[os.write(self._requests, frame) :]
            except OSError:
                self._lose()
                raise
        return proc

    def hand_over(self, fds: list[int]) -> bool:
        """Give the spawner these descriptors to close in a thread of its own (issue 17:
        the kernel's teardown of a file watch took an agent 5-25 ms here, on its way out,
        where nobody waits for the spawner). Returns whether it took them; either way this
        process still holds its own copies."""
        import socket

        if not fds or self.lost:
            return False
        try:
            socket.send_fds(self._keep, [b"close"], fds)
        except OSError:
            return False
        return True

    def collect(self, proc: SpawnedProc) -> None:
        """Read the spawner's replies up to ``proc``'s (they come in order)."""
        with self._reply_lock:
            while not proc.known:
                line = self._reply_line()
                if line is None:  # the spawner is gone
                    for waiting in list(self._waiting.values()):
                        waiting.replied(None, None, "its spawner process ended before it"
                                        " said whether the run started")  # fmt: skip
                    self._waiting.clear()
                    break
                self._replied(line)

    def _reply_line(self) -> bytes | None:
        while b"\n" not in self._reply_buf:
            try:
                chunk = os.read(self._replies, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                return None
            self._reply_buf += chunk
        line, _, self._reply_buf = self._reply_buf.partition(b"\n")
        return line

    def _replied(self, line: bytes) -> None:
        kind, seq_text, *rest = line.decode("ascii", "replace").split()
        proc = self._waiting.pop(int(seq_text), None)
        if proc is None:
            return
        if kind == "S":
            started = rest[1] if rest[1] != "-" else None
            proc.replied(int(rest[0]), started, None)
            return
        errno_, what = int(rest[0]), rest[1]
        proc.replied(None, None, _failure(proc, errno_, what))

    def attach(self, watcher: FdWatcher) -> None:
        """``watcher`` reads the exits pipe from now on (until someone ``take_exits``): a
        spawner started early (``start_early``) gets it once the agent has one."""
        if self._watcher is not None:
            return
        self._watcher = watcher
        if not self.taken and not self.lost:
            watcher.watch_fd(self._exits, self.drain)

    def take_exits(self) -> int:
        """From now on the caller polls the exits pipe (the returned descriptor) and calls
        ``drain`` when it is readable; the reaper thread no longer does. An agent's loop
        does: a run's end then reaches it with no hand-over between threads."""
        self.taken = True
        if self._watcher is not None:
            self._watcher.unwatch_fd(self._exits)
        return self._exits

    def drain(self) -> None:
        """Read what the spawner said of ended runs (or that it is gone), and end them."""
        lines: list[bytes] = []
        with self._exit_lock:
            try:
                chunk = os.read(self._exits, 65536)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if chunk:
                self._exit_buf += chunk
                *lines, self._exit_buf = self._exit_buf.split(b"\n")
        if not chunk:
            self._lose()
            return
        for line in lines:
            _kind, seq_text, code_text = line.decode("ascii", "replace").split()
            with self._reply_lock:
                proc = self._running.pop(int(seq_text), None)
            if proc is None:
                continue
            if int(code_text) < 0:  # it never started: the reply says why
                proc.pid  # noqa: B018 - reads the reply
                proc.end(None)
            else:
                proc.end(int(code_text))

    def _lose(self) -> None:
        """The spawner is gone (killed): its runs may still run, now nobody's children.
        Each is watched in /proc until it ends; its exit code is unknown."""
        with self._reply_lock:
            if self.lost:
                return
            self.lost = True
            running = list(self._running.values())
            self._running.clear()
        if self._watcher is not None:
            self._watcher.unwatch_fd(self._exits)
        if running:
            threading.Thread(
                target=_watch_orphans, args=(running,), name="launchctl-orphans", daemon=True
            ).start()


def _watch_orphans(procs: list[SpawnedProc]) -> None:
    from launchctl import procfs

    why = "its spawner process ended (killed?) while the run ran; the exit code is unknown"
    left = list(procs)
    while left:
        still = []
        for proc in left:
            pid = proc.pid
            if pid is not None and procfs.live(pid) and procfs.start_time(pid) == proc.started:
                still.append(proc)
                continue
            if pid is not None:  # what the run left in its group goes with it, as ever
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            proc.end(None, proc.failure or why)
        left = still
        if left:
            time.sleep(GONE_POLL_S)


def _failure(proc: SpawnedProc, errno_: int, what: str) -> str:
    """Why the spawner could not start ``proc``, as the wrapper's checks would say it."""
    import errno

    reason = os.strerror(errno_) if errno_ else "unknown error"
    if what == "cwd":
        return f"cannot enter the run's working directory {proc.cwd}: {reason}"
    if what == "log":
        return f"cannot open the run's log: {reason}"
    if what == "claimed":
        return "another agent took the run over before it started (it was requeued there)"
    if what == "pid":
        return f"cannot write the run's pid file: {reason}"
    if errno_ == errno.ENOENT:
        return f"command not found: {proc.argv0}"
    if errno_ == errno.EACCES:
        return f"permission denied running {proc.argv0}"
    return f"could not start {proc.argv0}: {reason}"
