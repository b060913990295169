"""Wake the agent when the store changes (a file watch), with a slow poll as a fallback."""

from __future__ import annotations

import contextlib
import os
import select
import threading
from pathlib import Path


class PipeEvent:
    """``threading.Event``'s ``set``, ``clear``, ``wait`` and ``is_set``, on a pipe.

    ``set`` takes no lock, so a signal handler may call it. A handler runs in the main
    thread wherever that thread was: with ``threading.Event`` it could interrupt the
    thread inside ``Event.wait``, holding the event's lock, and ``set`` would then wait for
    that lock for ever (an agent that got SIGTERM at that moment never stopped).
    """

    def __init__(self) -> None:
        self._r, self._w = os.pipe()  # not inherited by the runs (PEP 446)
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._poll = select.poll()
        self._poll.register(self._r, select.POLLIN)

    def set(self) -> None:
        with contextlib.suppress(BlockingIOError):  # the pipe is full: it is set
            os.write(self._w, b"\0")

    def is_set(self) -> bool:
        return bool(self._poll.poll(0))

    def wait(self, timeout: float | None = None) -> bool:
        """Until set (True) or ``timeout`` seconds have passed (False)."""
        return bool(self._poll.poll(None if timeout is None else max(0.0, timeout) * 1000))

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._r, 4096):
                pass

    def __del__(self) -> None:
        # Closed only once nothing refers to it: nothing can write to a reused number.
        for fd in (getattr(self, "_r", -1), getattr(self, "_w", -1)):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)


class Waker:
    """An event that is set by store writes, run exits and signals.

    The watch covers the database and its WAL file only (not run logs), so a
    chatty run does not keep the agent busy. ``wake`` may be called from a signal
    handler (see ``PipeEvent``).
    """

    def __init__(self, db_path: Path, *, fallback_s: float = 2.0) -> None:
        self.event = PipeEvent()
        self.fallback_s = fallback_s
        self._stop = threading.Event()
        self._names = {db_path.name, db_path.name + "-wal"}
        self._dir = db_path.parent
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="store-watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        try:
            from watchfiles import watch
        except ImportError:  # pragma: no cover - watchfiles is a dependency
            return
        names = self._names

        def only_store(_change: object, path: str) -> bool:
            return Path(path).name in names

        with contextlib.suppress(Exception):  # the fallback poll still runs
            for _ in watch(
                self._dir,
                watch_filter=only_store,
                recursive=False,
                stop_event=self._stop,
                debounce=100,
                step=10,
                rust_timeout=500,
                yield_on_timeout=False,
                raise_interrupt=False,
            ):
                self.event.set()

    def wake(self) -> None:
        self.event.set()

    def wait(self, timeout: float | None = None) -> bool:
        woke = self.event.wait(self.fallback_s if timeout is None else timeout)
        self.event.clear()
        return woke

    def close(self) -> None:
        self._stop.set()
        self.event.set()
