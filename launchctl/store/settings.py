"""SQL for the store's own settings (migration m009): a key/value table, no policy.

Which keys exist and what their values may be is ``launchctl.sync.settings``' business;
who may change them is checked through ``authorize``, inside the write transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from launchctl.store.db import Database, Row

# Run inside the write transaction before anything is written (as in store/teams.py).
Authorize = Callable[[], object]


class SettingsTable:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, key: str) -> str | None:
        row = self.db.one("SELECT value FROM settings WHERE key = ?", [key])
        return None if row is None else str(row["value"])

    def all(self, prefix: str = "") -> list[Row]:
        """Every setting (``key``, ``value``, ``updated_at``) whose key starts with ``prefix``."""
        return self.db.all(
            "SELECT key, value, updated_at FROM settings WHERE substr(key, 1, ?) = ? ORDER BY key",
            [len(prefix), prefix],
        )

    def set(self, key: str, value: str, *, authorize: Authorize | None = None) -> None:
        self.change({key: value}, (), authorize=authorize)

    def unset(self, key: str, *, authorize: Authorize | None = None) -> bool:
        """Remove ``key``; whether it was set."""
        return bool(self.change({}, (key,), authorize=authorize))

    def change(
        self,
        values: Mapping[str, str],
        unset: Sequence[str] = (),
        *,
        authorize: Authorize | None = None,
    ) -> int:
        """Set ``values`` and remove ``unset`` in one transaction; how many keys were removed."""
        now = time.time()
        removed = 0
        with self.db.write():
            if authorize is not None:
                authorize()
            for key, value in values.items():
                self.db.execute(
                    "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
                    " updated_at = excluded.updated_at",
                    [key, value, now],
                )
            for key in unset:
                removed += self.db.execute("DELETE FROM settings WHERE key = ?", [key]).rowcount
        return removed

    def store_entity(self) -> str | None:
        """The store's own entity: the first one made, the default entity of the user who
        created the store (migration m003). Its admins own the store-wide settings."""
        row = self.db.one("SELECT name FROM entities ORDER BY created_at, rowid LIMIT 1")
        return None if row is None else str(row["name"])
