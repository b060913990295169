"""The SQLite connection: WAL, busy timeout, foreign keys, migrations on open, transactions."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from launchctl import __version__, paths
from launchctl.errors import LaunchctlError, StoreBusy

# How long a writer waits for another one before giving up with a clear message.
# Tables the agent reads for every run it starts, which change seldom: a read of one of
# them inside a write is kept (``Database.one_kept``) until another connection commits, or
# this one writes to any of them (issue 17). tests/test_store.py checks that no trigger or
# cascade from another table writes to them.
KEPT_TABLES = ("queues", "members", "entities", "jobs", "job_versions", "job_aliases")
_WRITE = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER)\b", re.IGNORECASE)
_KEPT_TABLE = re.compile(rf"\b({'|'.join(KEPT_TABLES)})\b", re.IGNORECASE)
KEPT_MAX = 256  # reads kept at most (then all are forgotten)
# Words a read kept from pass to pass (``Database.all_watched``) may name: a write of this
# connection whose text holds one of them makes the reads that named it be made again.
WATCHED = ("sweep", "cancel_requested", "deps", "enqueued_at", "into runs")
_CASCADES = frozenset({"DELETE", "REPLACE", "DROP", "ALTER"})

BUSY_TIMEOUT_S = float(os.environ.get("LAUNCHCTL_BUSY_TIMEOUT", "30"))

Row = dict[str, Any]

# What SQLite says when a store's folder (or file) cannot be written: read it read-only.
READ_ONLY_ERRORS = frozenset(
    {"SQLITE_READONLY_DIRECTORY", "SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_READONLY_CANTINIT"}
)


def _translate(exc: sqlite3.Error, path: Path) -> LaunchctlError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return StoreBusy(
            f"the database {path} stayed locked by another writer for over "
            f"{BUSY_TIMEOUT_S:g} s; nothing was changed, try again"
        )
    if "disk is full" in text or "database or disk is full" in text or _disk_full(path):
        return LaunchctlError(f"the disk holding {path} is full; nothing was changed")
    if "readonly" in text:
        return LaunchctlError(
            f"the database {path} is read-only for this process (its file or its folder may"
            " not be written); it can be listed, not changed: nothing was changed"
        )
    if "unable to open" in text:
        return LaunchctlError(f"cannot open the database {path}: {text}")
    return LaunchctlError(f"database error in {path}: {text}")


def _disk_full(path: Path) -> bool:
    """SQLite reports a full disk as a plain I/O error when the WAL cannot grow."""
    import shutil

    try:
        return shutil.disk_usage(path.parent).free < 1 << 20
    except OSError:
        return False


class _Held:
    """A lock held on an open file: released when the ``with`` block ends."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


class Database:
    """One connection to the store file. All SQL in launchctl goes through here.

    A store that this process may read but not write (a read-only home, a 0444 file, a
    backup on read-only media) is opened read-only: listings work, and a write fails with
    one line saying why.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.read_only = False
        self._depth = 0  # 1 inside write(), more inside its savepoints
        self._owner: int | None = None  # the thread inside write()
        self._kept: dict[tuple[str, tuple[Any, ...]], Row | None] = {}  # see one_kept
        self._kept_version: int | None = None  # PRAGMA data_version they were read at
        self._kept_checked = False  # data_version compared in this write
        # See all_watched: its reads, and how many writes of this connection named each word.
        self._watched: dict[
            tuple[str, tuple[Any, ...], tuple[str, ...]], tuple[Any, list[Row]]
        ] = {}
        self._wrote: dict[str, int] = {}
        self._pass_version: int | None = None  # data_version, read once per pass (one_pass)
        self._in_pass = False
        self._ring_owed = False  # a commit made inside one_pass: the bell rings at its end
        self._bell: int | None = None  # the bell's folder, opened at the first ring
        try:
            paths.make_dir(path.parent)  # 0700 (or the group mode), if launchctl creates it
        except OSError as exc:
            raise LaunchctlError(
                f"cannot create the launchctl home {path.parent}: {exc.strerror or exc}"
            ) from None
        try:
            if self._size() in (None, 0):
                self._open_new()
            else:
                self._open()
        except sqlite3.Error as exc:
            raise _translate(exc, path) from None

    def _size(self) -> int | None:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LaunchctlError(
                f"cannot read the database {self.path}: {exc.strerror or exc}"
            ) from None

    def _open_new(self) -> None:
        """Create the store, holding the migrate lock from the file's creation to its schema:
        so a zero-length file seen under the lock is not a store being made but a broken one."""
        try:
            lock = self._lock()
        except OSError as exc:
            if self._size() == 0:
                raise self._empty() from None
            raise LaunchctlError(
                f"cannot create the database {self.path}: {exc.strerror or exc}"
            ) from None
        with lock:
            size = self._size()
            if size == 0:
                raise self._empty()
            if size is None:
                try:
                    paths.make_file(self.path)  # 0600 (or the group mode); -wal, -shm follow
                except OSError as exc:
                    raise LaunchctlError(
                        f"cannot create the database {self.path}: {exc.strerror or exc}"
                    ) from None
            self._open(locked=True)

    def _empty(self) -> LaunchctlError:
        return LaunchctlError(
            f"the database {self.path} is empty (0 bytes): it is not a launchctl store, or"
            " it lost its content (restore it from a backup); to start a new store, remove it"
        )

    def _lock(self) -> _Held:
        """The migrate lock: two processes opening a new store at once must not both migrate.

        Taken when called (an OSError is raised then, not at ``with``)."""
        lock_path = self.path.with_name(self.path.name + ".migrate.lock")
        paths.make_file(lock_path)
        fd = os.open(lock_path, os.O_RDONLY | os.O_NOFOLLOW)  # flock needs no write access
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        return _Held(fd)

    def _connect(self, uri: str | None = None) -> None:
        # isolation_level=None: no implicit transactions; writes use write() below.
        self.conn = sqlite3.connect(
            uri or str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None,
            check_same_thread=False, uri=uri is not None,
        )  # fmt: skip
        self.conn.row_factory = sqlite3.Row
        self.conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        self.conn.execute("PRAGMA foreign_keys = ON")

    def _open(self, *, locked: bool = False) -> None:
        self._connect()
        try:
            mode = self.conn.execute("PRAGMA journal_mode").fetchone()[0]
        except sqlite3.OperationalError as exc:
            # WAL needs its -shm and -wal files beside the database: a read-only folder
            # cannot have them made, so such a store is read as it is, or not at all.
            if getattr(exc, "sqlite_errorname", "") not in READ_ONLY_ERRORS:
                raise
            self.conn.close()
            self._open_read_only()
            return
        if mode != "wal":
            try:
                self.conn.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorname", "") not in READ_ONLY_ERRORS:
                    raise
                self.read_only = True
        if not self.read_only:
            self.conn.execute("PRAGMA synchronous = NORMAL")
        self._migrate(locked=locked)

    def _open_read_only(self) -> None:
        """Open a store in a folder this process cannot write, for reading only.

        Without a write-ahead log beside it, the file holds every committed change and is
        opened immutable; with one (left by a writer that could not clean up), reading it
        needs its shared memory file, so the store is refused rather than read stale.
        """
        wal = self.path.with_name(self.path.name + "-wal")
        with contextlib.suppress(FileNotFoundError):
            if wal.stat().st_size > 0:
                raise LaunchctlError(
                    f"cannot read the database {self.path}: its folder is read-only and it has"
                    f" a write-ahead log ({wal.name}) that only a process allowed to write there"
                    " can apply; open it once with write access"
                )
        from urllib.parse import quote

        self._connect(f"file:{quote(str(self.path))}?immutable=1")
        self.read_only = True
        self._migrate(locked=False)

    def _migrate(self, *, locked: bool) -> None:
        from launchctl.store.migrations import NAMES, SET_NAME

        # A plain query first: sqlite-utils costs ~45 ms to import, paid only to migrate.
        has_table = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlite_migrations'"
        ).fetchone()
        if has_table:
            applied = {
                r[0]
                for r in self.conn.execute(
                    "SELECT name FROM _sqlite_migrations WHERE migration_set = ?", [SET_NAME]
                )
            }
            newer = sorted(applied - set(NAMES))
            if newer:
                raise LaunchctlError(
                    f"the database {self.path} has schema {newer[-1]}, newer than this"
                    f" launchctl {__version__} knows (its newest is {NAMES[-1]}): upgrade"
                    " launchctl to use this store"
                )
            if applied >= set(NAMES):
                return
        if self.read_only:
            raise LaunchctlError(
                f"the database {self.path} needs its schema upgraded to {NAMES[-1]}, but this"
                " process cannot write it; open it once with write access"
            )
        if locked:
            self._apply_migrations()
            return
        try:
            lock = self._lock()
        except OSError as exc:
            raise LaunchctlError(
                f"cannot write beside the database {self.path}: {exc.strerror or exc}"
            ) from None
        with lock:
            self._apply_migrations()

    def _apply_migrations(self) -> None:
        from sqlite_utils import Database as SUDatabase

        from launchctl.store.migrations import migrations

        sdb = SUDatabase(self.conn, execute_plugins=False)
        migrations.apply(sdb)

    def close(self) -> None:
        self.conn.close()
        if self._bell is not None:
            self._bell_closer()  # closes it once, here or when this object goes
            self._bell = None

    def write(self) -> contextlib.AbstractContextManager[Database]:
        """A write transaction that takes the write lock at once (BEGIN IMMEDIATE).

        Taking it up front means a reader-turned-writer never fails with SQLITE_BUSY
        half way; other writers wait up to the busy timeout. Inside another write of this
        connection it is a savepoint of it (issue 17: the agent claims a run and moves it
        to starting in one commit): what fails inside is undone alone, and it all commits
        with the outermost write.
        """
        if self._depth and self._owner == threading.get_ident():
            return self._savepoint()
        return self._transaction()

    @contextlib.contextmanager
    def _savepoint(self) -> Iterator[Database]:
        name = f"w{self._depth}"
        self.conn.execute(f"SAVEPOINT {name}")
        self._depth += 1
        try:
            yield self
        except BaseException:
            self._kept.clear()  # a read made after a write undone here is not kept
            self.conn.execute(f"ROLLBACK TO {name}")
            self.conn.execute(f"RELEASE {name}")
            raise
        else:
            self.conn.execute(f"RELEASE {name}")
        finally:
            self._depth -= 1

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Database]:
        # Writers of this process take turns on a lock of their own first (issue 17): an
        # agent's loop and its start threads each have a connection, and SQLite's busy
        # handler, between them, sleeps 1, 2, 5, 10... ms where a lock hands over at once.
        # Past the busy timeout it goes on without it: SQLite's own wait decides, as before.
        lock = _writer_lock(self.path)
        held = lock.acquire(timeout=BUSY_TIMEOUT_S)
        try:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _translate(exc, self.path) from None
            self._depth, self._owner = 1, threading.get_ident()
            self._kept_checked = False
            changes = self.conn.total_changes
            try:
                yield self
            except BaseException:
                self._kept.clear()  # a read made after a write undone here is not kept
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            finally:
                self._depth, self._owner = 0, None
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._kept.clear()
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise _translate(exc, self.path) from None
            if self.conn.total_changes != changes:  # a write that wrote nothing tells nobody
                self.ring()
        finally:
            if held:
                lock.release()

    def ring(self) -> None:
        """Tell the store's watchers it changed: touch the bell (``paths.bell_path``), made
        with the store's modes the first time; never through a link put in its place
        (``paths.open_bell``). A bell that cannot be touched is left alone: watchers still
        poll, more slowly. Inside ``one_pass`` the bell is touched once, as the pass ends."""
        if self._in_pass:
            self._ring_owed = True
            return
        self._ring_now()

    def _ring_now(self) -> None:
        try:
            if self._bell is None:
                self._bell = paths.open_bell(self.path)
                self._bell_closer = weakref.finalize(self, _close_quietly, self._bell)
            paths.ring(self._bell)
        except OSError:
            pass

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Cursor:
        writes, changes_kept, words = _kind(sql)
        if changes_kept and self._kept:
            self._kept.clear()  # this connection changes what they read
        for word in words:  # counted before it runs: one that fails only costs a read
            self._wrote[word] = self._wrote.get(word, 0) + 1
        changes = self.conn.total_changes
        try:
            cursor = self.conn.execute(sql, params)
        except sqlite3.IntegrityError:
            raise
        except UnicodeEncodeError:
            raise LaunchctlError(
                "the input holds characters that are not valid UTF-8; nothing was changed"
            ) from None
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from None
        if (
            self._depth == 0
            and not self.conn.in_transaction
            and self.conn.total_changes != changes
            and writes
        ):
            self.ring()  # a write outside write(), committed on its own
        return cursor

    def all(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Row]:
        return [dict(r) for r in self.execute(sql, params).fetchall()]

    def one(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Row | None:
        row = self.execute(sql, params).fetchone()
        return dict(row) if row is not None else None

    def one_kept(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """``one`` for a read of ``KEPT_TABLES`` only, kept from one write to the next.

        Issue 17: the agent reads the same queue, job version and roles for every run it
        starts. Inside a write (BEGIN IMMEDIATE: no other connection commits meanwhile) a
        kept read is used again while ``PRAGMA data_version`` (which changes when another
        connection commits) is what it was when read, and this connection has written none
        of those tables since (``execute`` forgets them all then, and a rollback does).
        Outside a write of this thread it is ``one``. Each call gets its own copy.
        """
        if self._depth == 0 or self._owner != threading.get_ident():
            return self.one(sql, params)
        if not self._kept_checked:
            version = self.conn.execute("PRAGMA data_version").fetchone()[0]
            if version != self._kept_version:
                self._kept.clear()
                self._kept_version = version
            self._kept_checked = True
        key = (sql, tuple(params))
        if key in self._kept:
            row = self._kept[key]
        else:
            row = self.one(sql, params)
            if len(self._kept) >= KEPT_MAX:
                self._kept.clear()
            self._kept[key] = row
        return None if row is None else dict(row)

    def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version``: it changes when another connection commits."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    @contextlib.contextmanager
    def one_pass(self) -> Iterator[None]:
        """An agent's pass: its ``all_watched`` reads share one read of ``PRAGMA
        data_version``. Another process's commit during the pass is then seen by the next
        pass, which that commit's bell starts. Its own commits ring the bell once, as it
        ends (issue 17: a pass that starts one run and records another's end commits twice;
        each ring is a write to the bell and a wake of every watcher, the agent's own
        included, and watchers take a change in steps of 10 ms anyway)."""
        self._in_pass, self._pass_version, self._ring_owed = True, None, False
        try:
            yield
        finally:
            self._in_pass, self._pass_version = False, None
            if self._ring_owed:
                self._ring_owed = False
                self._ring_now()

    def all_watched(self, sql: str, params: Sequence[Any], words: tuple[str, ...]) -> list[Row]:
        """``all`` for a read an agent makes every pass whose answer seldom changes (issue
        17: the sweeps that need a scheduler, the cancels asked of its runs, its queues'
        runs that wait for others: three reads a pass, a tenth of a trivial run's time in
        the loop). Its last answer is given again while no other connection has committed
        (``PRAGMA data_version``) and this one has made no write whose text names one of
        ``words`` (from ``WATCHED``): the writes that could change it. Inside a transaction
        it is ``all``: what it read could still be undone.
        """
        if any(w not in WATCHED for w in words):
            raise ValueError(f"all_watched: {words} are not all in WATCHED")
        if self.conn.in_transaction:
            return self.all(sql, params)
        version = self._pass_version
        if version is None:
            version = self.execute("PRAGMA data_version").fetchone()[0]
            if self._in_pass:
                self._pass_version = version
        mark = (version, *(self._wrote.get(w, 0) for w in words))  # before the read
        key = (sql, tuple(params), words)
        kept = self._watched.get(key)
        if kept is None or kept[0] != mark:
            kept = (mark, self.all(sql, params))
            if len(self._watched) >= KEPT_MAX:
                self._watched.clear()
            self._watched[key] = kept
        return [dict(row) for row in kept[1]]


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _kind(sql: str) -> tuple[bool, bool, tuple[str, ...]]:
    """Whether ``sql`` is a write, whether it writes one of ``KEPT_TABLES``, and which of
    the ``WATCHED`` words a write names; worked out once per text (issue 17: the agent
    runs the same few statements for every run)."""
    found = _KINDS.get(sql)
    if found is None:
        verb = _WRITE.match(sql)
        writes = verb is not None
        text = sql.lower()
        words = tuple(w for w in WATCHED if w in text) if writes else ()
        if verb is not None and verb.group(1).upper() in _CASCADES:
            words = WATCHED  # a delete's foreign-key actions write tables it does not name
        found = (writes, writes and bool(_KEPT_TABLE.search(sql)), words)
        if len(_KINDS) >= 1024:
            _KINDS.clear()
        _KINDS[sql] = found
    return found


_KINDS: dict[str, tuple[bool, bool, tuple[str, ...]]] = {}

_WRITER_LOCKS: dict[str, Any] = {}  # database path -> its writers' lock


def _writer_lock(path: Path) -> Any:
    """The lock this process's writers of the database ``path`` take turns on (reentrant:
    a thread's write inside its write on another connection is SQLite's to refuse)."""
    return _WRITER_LOCKS.setdefault(str(path), threading.RLock())


def dumps(value: Any) -> str:
    """JSON for the database: compact, stable key order, never pickle."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def loads(text: str | None) -> Any:
    return json.loads(text) if text else None
