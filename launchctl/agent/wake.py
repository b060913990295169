"""Wake the agent when the store changes (a file watch), with a slow poll as a fallback."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path


class Waker:
    """An event that is set by store writes, run exits and signals.

    The watch covers the database and its WAL file only (not run logs), so a
    chatty run does not keep the agent busy.
    """

    def __init__(self, db_path: Path, *, fallback_s: float = 2.0) -> None:
        self.event = threading.Event()
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
