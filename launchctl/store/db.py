"""The SQLite connection: WAL, busy timeout, foreign keys, migrations on open, transactions."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from launchctl.errors import LaunchctlError, StoreBusy

# How long a writer waits for another one before giving up with a clear message.
BUSY_TIMEOUT_S = float(os.environ.get("LAUNCHCTL_BUSY_TIMEOUT", "30"))

Row = dict[str, Any]


def _translate(exc: sqlite3.Error, path: Path) -> LaunchctlError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return StoreBusy(
            f"the database {path} stayed locked by another writer for over "
            f"{BUSY_TIMEOUT_S:.0f} s; nothing was changed, try again"
        )
    if "disk is full" in text or "database or disk is full" in text or _disk_full(path):
        return LaunchctlError(f"the disk holding {path} is full; nothing was changed")
    if "readonly" in text or "unable to open" in text:
        return LaunchctlError(f"cannot write the database {path}: {text}")
    return LaunchctlError(f"database error in {path}: {text}")


def _disk_full(path: Path) -> bool:
    """SQLite reports a full disk as a plain I/O error when the WAL cannot grow."""
    import shutil

    try:
        return shutil.disk_usage(path.parent).free < 1 << 20
    except OSError:
        return False


class Database:
    """One connection to the store file. All SQL in launchctl goes through here."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LaunchctlError(f"cannot create the launchctl home {path.parent}: {exc}") from None
        try:
            # isolation_level=None: no implicit transactions; writes use write() below.
            self.conn = sqlite3.connect(
                str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            self.conn.row_factory = sqlite3.Row
            self.conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            self.conn.execute("PRAGMA foreign_keys = ON")
            mode = self.conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode != "wal":
                self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        except sqlite3.Error as exc:
            raise _translate(exc, path) from None

    def _migrate(self) -> None:
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
            if applied >= set(NAMES):
                return
        from sqlite_utils import Database as SUDatabase

        from launchctl.store.migrations import migrations

        sdb = SUDatabase(self.conn, execute_plugins=False)
        # Two processes opening a new store at once must not both migrate it.
        lock_path = self.path.with_name(self.path.name + ".migrate.lock")
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                migrations.apply(sdb)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[Database]:
        """A write transaction that takes the write lock at once (BEGIN IMMEDIATE).

        Taking it up front means a reader-turned-writer never fails with SQLITE_BUSY
        half way; other writers wait up to the busy timeout.
        """
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from None
        try:
            yield self
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise _translate(exc, self.path) from None

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Cursor:
        try:
            return self.conn.execute(sql, params)
        except sqlite3.IntegrityError:
            raise
        except UnicodeEncodeError:
            raise LaunchctlError(
                "the input holds characters that are not valid UTF-8; nothing was changed"
            ) from None
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from None

    def all(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Row]:
        return [dict(r) for r in self.execute(sql, params).fetchall()]

    def one(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Row | None:
        row = self.execute(sql, params).fetchone()
        return dict(row) if row is not None else None


def dumps(value: Any) -> str:
    """JSON for the database: compact, stable key order, never pickle."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def loads(text: str | None) -> Any:
    return json.loads(text) if text else None
