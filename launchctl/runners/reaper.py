"""The reaper: the one thread that follows every run process an agent started."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Protocol


class Followed(Protocol):
    """What the reaper calls on a run's handle (``local_process.ProcessHandle``)."""

    _ended: threading.Event  # the run's leader is gone

    def _check_disk(self) -> None: ...

    def _copier_late(self) -> None: ...


# How often a run that writes its own log (no secrets to mask) has its disk checked.
DISK_CHECK_S = 0.5


class Reaper:
    """One thread that follows every run process this agent started (issue 17: a trivial
    run used to cost two threads, one blocked in ``wait`` and one watching its disk).

    It waits on each process's pidfd (Linux 5.3+) in one selector; when the run's leader
    ends it reaps it, kills what it left in its group, gives the log copier ``DRAIN_S``
    to finish, then reports the exit (``on_exit``). Every ``DISK_CHECK_S`` it checks the
    disk of the runs that write their own log. Its callbacks never block. Where pidfds do
    not exist (``supported`` false), each handle has its own threads, as before.
    """

    def __init__(self) -> None:
        import selectors

        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._pending: list[tuple[int, Callable[[], None]]] = []
        self._kept: dict[int, Callable[[], None] | None] = {}  # watch_fd's: add, or drop (None)
        self._keep: set[int] = set()  # fds watched for good (a spawner's exits pipe)
        self._watches: set[Followed] = set()
        self._deadlines: dict[Followed, float] = {}
        self._checked_at = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="launchctl-reaper", daemon=True)
        self._thread.start()

    def follow(self, pid: int, then: Callable[[], None]) -> None:
        """Call ``then`` (in the reaper's thread) once the child ``pid`` has ended."""
        fd = os.pidfd_open(pid)
        with self._lock:
            self._pending.append((fd, then))
        self._wake()

    def watch_fd(self, fd: int, then: Callable[[], None]) -> None:
        """Call ``then`` (in the reaper's thread) each time ``fd`` is readable."""
        with self._lock:
            self._kept[fd] = then
        self._wake()

    def unwatch_fd(self, fd: int) -> None:
        with self._lock:
            self._kept[fd] = None
        self._wake()

    def watch_disk(self, handle: Followed) -> None:
        with self._lock:
            first = not self._watches
            self._watches.add(handle)
        if first:  # else the next disk check is already in the thread's timeout
            self._wake()

    def unwatch_disk(self, handle: Followed) -> None:
        """``handle``'s run has ended: its disk is not checked again (nor is it kept)."""
        with self._lock:
            self._watches.discard(handle)

    def drain_by(self, handle: Followed, deadline: float) -> None:
        """Kill ``handle``'s copier if it has not ended by ``deadline`` (monotonic)."""
        with self._lock:
            self._deadlines[handle] = deadline

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def drained(self, handle: Followed) -> None:
        with self._lock:
            self._deadlines.pop(handle, None)

    def _timeout(self) -> float | None:
        """Until the next copier deadline or disk check; None: only a pidfd wakes it."""
        now = time.monotonic()
        with self._lock:
            times = list(self._deadlines.values())
            if self._watches:
                times.append(self._checked_at + DISK_CHECK_S)
        return max(0.0, min(times) - now) if times else None

    def _loop(self) -> None:
        while True:
            try:
                self._step()
            except Exception:  # never die: every run's end depends on this thread
                import sys as _sys
                import traceback

                traceback.print_exc(file=_sys.stderr)
                time.sleep(0.1)

    def _step(self) -> None:
        import selectors

        for key, _events in self._selector.select(self._timeout()):
            if key.data is None:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
                with self._lock:
                    pending, self._pending = self._pending, []
                    kept, self._kept = self._kept, {}
                for fd, then in pending:
                    self._selector.register(fd, selectors.EVENT_READ, then)
                for fd, action in kept.items():
                    if action is None:
                        if fd in self._keep:
                            self._keep.discard(fd)
                            self._selector.unregister(fd)
                    elif fd not in self._keep:
                        self._keep.add(fd)
                        self._selector.register(fd, selectors.EVENT_READ, action)
                continue
            if key.fd in self._keep:
                self._call(key.data)
                continue
            self._selector.unregister(key.fd)
            os.close(key.fd)
            self._call(key.data)
        self._timers()

    def _timers(self) -> None:
        now = time.monotonic()
        with self._lock:
            late = [h for h, at in self._deadlines.items() if at <= now]
            for handle in late:
                del self._deadlines[handle]
            watches = list(self._watches) if now - self._checked_at >= DISK_CHECK_S else []
        for handle in late:
            self._call(handle._copier_late)
        if watches:
            self._checked_at = now
            for handle in watches:
                if handle._ended.is_set():
                    with self._lock:
                        self._watches.discard(handle)
                else:
                    self._call(handle._check_disk)

    def _call(self, then: Callable[[], None]) -> None:
        try:
            then()
        except Exception:  # one run's trouble never stops the others' reaping
            import sys as _sys
            import traceback

            traceback.print_exc(file=_sys.stderr)


_REAPER: Reaper | None = None
_REAPER_LOCK = threading.Lock()


def reaper() -> Reaper | None:
    """This process's reaper, started on first use; None where pidfds do not exist."""
    global _REAPER
    with _REAPER_LOCK:
        if _REAPER is None:
            if not hasattr(os, "pidfd_open"):
                return None
            try:
                os.close(os.pidfd_open(os.getpid()))
            except OSError:  # an older kernel
                return None
            _REAPER = Reaper()
        return _REAPER
