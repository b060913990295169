"""Wake the agent when the store changes (a file watch), with a slow poll as a fallback."""

from __future__ import annotations

import contextlib
import os
import select
import threading
from pathlib import Path
from typing import Any

from launchctl import paths


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

    def watch(self, fd: int) -> None:
        """``wait`` also returns once ``fd`` is readable (its reader drains it)."""
        self._poll.register(fd, select.POLLIN)

    def unwatch(self, fd: int) -> None:
        with contextlib.suppress(KeyError):
            self._poll.unregister(fd)

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

    The watch covers the store's bell only (``launchctl.paths.bell_path``), which every
    launchctl process touches once per write it commits; not run logs, so a chatty run
    does not keep the agent busy, and not the database's WAL, which SQLite writes a page
    at a time (issue 17: a watch of it woke each watcher thread about six times for every
    trivial run, and those wakes delayed the runs). A write by anything else (the sqlite3
    shell) is seen by the fallback poll. Where the bell's folder cannot be made, the
    database and its WAL are watched, as before. ``wake`` may be called from a signal
    handler (see ``PipeEvent``).
    """

    def __init__(self, db_path: Path, *, fallback_s: float = 2.0) -> None:
        self.event = PipeEvent()
        self.fallback_s = fallback_s
        bell = paths.bell_path(db_path)
        try:
            os.close(paths.open_bell(db_path))  # made if missing; refused if a link
            self._names, self._dir = frozenset({bell.name}), bell.parent
        except OSError:
            self._names = frozenset({db_path.name, db_path.name + "-wal"})
            self._dir = db_path.parent
        self._watch: _FolderWatch | None = None

    def start(self) -> None:
        self._watch = _FolderWatch.join(self._dir, self._names, self.event)

    def wake(self) -> None:
        self.event.set()

    def wait(self, timeout: float | None = None) -> bool:
        woke = self.event.wait(self.fallback_s if timeout is None else timeout)
        self.event.clear()
        return woke

    def close(self) -> None:
        if self._watch is not None:
            self._watch.leave(self.event)
            self._watch = None
        self.event.set()


class _FolderWatch:
    """One watch of a folder in this process, shared by every ``Waker`` of the same store
    (an agent's loop and its hook dispatcher): one watcher thread, woken once per change,
    where each waker had its own (issue 17). It stops when the last one leaves."""

    def __init__(self, folder: Path, names: frozenset[str]) -> None:
        self._dir = folder
        self._names = names
        self._events: set[PipeEvent] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="store-watch", daemon=True)

    @classmethod
    def join(cls, folder: Path, names: frozenset[str], event: PipeEvent) -> _FolderWatch:
        with _WATCHES_LOCK:
            key = (str(folder), names)
            watch = _WATCHES.get(key)
            if watch is None:
                watch = _WATCHES[key] = cls(folder, names)
                watch._thread.start()
            watch._events.add(event)
            return watch

    def leave(self, event: PipeEvent) -> None:
        with _WATCHES_LOCK:
            self._events.discard(event)
            if not self._events:
                self._stop.set()
                if _WATCHES.get((str(self._dir), self._names)) is self:
                    del _WATCHES[(str(self._dir), self._names)]

    def _changed(self) -> None:
        with _WATCHES_LOCK:
            events = list(self._events)
        for event in events:
            event.set()

    def _watch(self) -> None:
        with contextlib.suppress(Exception):  # the fallback poll still runs
            notify = rust_notify()
            if notify is not None:
                try:
                    self._watch_with_class(notify)
                    return
                except TypeError:  # another watchfiles' signatures: its own watch knows them
                    pass
            self._watch_with_package()

    def _watch_with_class(self, notify: Any) -> None:
        names = self._names
        with notify([str(self._dir)], *_watch_settings()) as watcher:
            while not self._stop.is_set():
                changes = watcher.watch(DEBOUNCE_MS, STEP_MS, TIMEOUT_MS, self._stop)
                if changes == "stop":
                    return
                if isinstance(changes, set) and any(
                    os.path.basename(path) in names for _kind, path in changes
                ):
                    self._changed()

    def _watch_with_package(self) -> None:
        """The same watch through watchfiles' public ``watch`` (where its watcher class
        could not be loaded alone)."""
        from watchfiles import watch

        names = self._names

        def only_store(_change: object, path: str) -> bool:
            return os.path.basename(path) in names

        for _ in watch(
            self._dir,
            watch_filter=only_store,
            recursive=False,
            stop_event=self._stop,
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            rust_timeout=TIMEOUT_MS,
            yield_on_timeout=False,
            raise_interrupt=False,
        ):
            self._changed()


def watch_descriptors() -> list[int]:
    """The inotify descriptors this process holds (its store watch's, made by watchfiles):
    handed to the agent's spawner to close as the agent leaves (``Agent.close``)."""
    found = []
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError, ValueError):
                if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:inotify":
                    found.append(int(name))
    return found


# The folder watches of this process, by folder and names watched (see ``_FolderWatch``).
_WATCHES: dict[tuple[str, frozenset[str]], _FolderWatch] = {}
_WATCHES_LOCK = threading.Lock()

# The store watch groups a burst of writes (the agent's own commits among them) into one
# wake at most every DEBOUNCE_MS.
DEBOUNCE_MS, STEP_MS, TIMEOUT_MS = 100, 10, 500


def rust_notify() -> Any:
    """watchfiles' watcher class (``RustNotify``), loaded without running the watchfiles
    package: ``import watchfiles`` imports anyio and multiprocessing, about 29 ms of every
    agent's start here (a direct launch's too), where the class alone costs nothing
    measurable (issue 17). The module is registered under its own name, so a later
    ``import watchfiles`` uses it rather than loading the extension twice. None where that
    cannot be done (another layout of the package): the caller uses ``watchfiles.watch``.
    """
    import importlib.machinery
    import importlib.util
    import sys

    name = "watchfiles._rust_notify"
    module = sys.modules.get(name)
    if module is None and "watchfiles" in sys.modules:  # the package is loaded already
        with contextlib.suppress(ImportError):
            module = importlib.import_module(name)
    if module is None:
        try:
            spec = importlib.util.find_spec("watchfiles")
            places = list(spec.submodule_search_locations or []) if spec else []
            found = [
                os.path.join(place, entry)
                for place in places
                for entry in sorted(os.listdir(place))
                if entry.startswith("_rust_notify.") and entry.endswith((".so", ".pyd"))
            ]
            if not found:
                return None
            loader = importlib.machinery.ExtensionFileLoader(name, found[0])
            own = importlib.util.spec_from_file_location(name, found[0], loader=loader)
            if own is None:
                return None
            module = importlib.util.module_from_spec(own)
            sys.modules[name] = module
            loader.exec_module(module)
        except Exception:
            sys.modules.pop(name, None)
            return None
    return getattr(module, "RustNotify", None)


def _watch_settings() -> tuple[bool, bool, int, bool, bool]:
    """RustNotify's (debug, force_polling, poll_delay_ms, recursive,
    ignore_permission_denied), from the environment variables ``watchfiles.watch`` reads:
    WATCHFILES_FORCE_POLLING (polling is also the default on WSL, where notifications of
    Windows' file systems do not arrive), WATCHFILES_POLL_DELAY_MS, WATCHFILES_DEBUG and
    WATCHFILES_IGNORE_PERMISSION_DENIED."""
    forced = os.environ.get("WATCHFILES_FORCE_POLLING")
    if forced:
        polling = forced.lower() not in {"false", "disable", "disabled"}
    else:
        uname = os.uname()
        polling = "microsoft-standard" in uname.release.lower() and uname.sysname == "Linux"
    delay = os.environ.get("WATCHFILES_POLL_DELAY_MS", "")
    return (
        bool(os.environ.get("WATCHFILES_DEBUG")),
        polling,
        int(delay) if delay.isdecimal() else 300,
        False,  # the store's folder only
        bool(os.environ.get("WATCHFILES_IGNORE_PERMISSION_DENIED")),
    )
