"""SQL for entities (teams) and their members."""

from __future__ import annotations

import time
from collections.abc import Callable

from launchctl.errors import LaunchctlError, NotFound
from launchctl.store.db import Database, Row

ROLES = ("admin", "member")

# Run inside the write transaction before anything is written, so that a permission
# checked is a permission still held when the change commits.
Authorize = Callable[[], object]

# An entity with its member, admin and queue counts.
_SUMMARY = (
    "SELECT e.name, e.created_at,"
    " (SELECT COUNT(*) FROM members m WHERE m.entity = e.name) AS member_count,"
    " (SELECT COUNT(*) FROM members m WHERE m.entity = e.name AND m.role = 'admin')"
    "   AS admin_count,"
    " (SELECT COUNT(*) FROM queues q WHERE q.entity = e.name) AS queue_count"
    " FROM entities e"
)


def missing(entity: str) -> NotFound:
    return NotFound(f"entity '{entity}' does not exist (see `launchctl team list`)")


class TeamTable:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, entity: str, admin_user: str, *, exist_ok: bool = False) -> Row:
        """A new entity with one member, its admin. ``exist_ok``: leave an existing one be."""
        now = time.time()
        with self.db.write():
            cur = self.db.execute(
                "INSERT OR IGNORE INTO entities (name, created_at) VALUES (?, ?)", [entity, now]
            )
            if cur.rowcount == 1:
                self.db.execute(
                    "INSERT INTO members (entity, user, role, added_at) VALUES (?, ?, 'admin', ?)",
                    [entity, admin_user, now],
                )
            elif not exist_ok:
                raise LaunchctlError(f"entity '{entity}' already exists")
        return self.get(entity)

    def exists(self, entity: str) -> bool:
        return self.db.one_kept("SELECT 1 FROM entities WHERE name = ?", [entity]) is not None

    def get(self, entity: str) -> Row:
        row = self.db.one(f"{_SUMMARY} WHERE e.name = ?", [entity])
        if row is None:
            raise missing(entity)
        return row

    def all(self) -> list[Row]:
        """Every entity with its member, admin and queue counts, by name."""
        return self.db.all(f"{_SUMMARY} ORDER BY e.name")

    def members(self, entity: str) -> list[Row]:
        """An entity's members, admins first, then by name."""
        if not self.exists(entity):
            raise missing(entity)
        return self.db.all(
            "SELECT user, role, added_at FROM members WHERE entity = ?"
            " ORDER BY role = 'member', user",
            [entity],
        )

    def role(self, entity: str, user: str) -> str | None:
        """'admin', 'member', or None when ``user`` is not in ``entity``."""
        row = self.db.one_kept(
            "SELECT role FROM members WHERE entity = ? AND user = ?", [entity, user]
        )
        return None if row is None else str(row["role"])

    def add(
        self, entity: str, user: str, role: str, *, authorize: Authorize | None = None
    ) -> str | None:
        """Add ``user`` to ``entity`` with ``role``, or change their role; returns the old one.

        Taking the admin role from the last admin is refused: an entity without an
        admin could never be managed again.
        """
        if role not in ROLES:
            raise LaunchctlError(f"unknown role {role!r}: choose admin or member")
        with self.db.write():
            if not self.exists(entity):
                raise missing(entity)
            if authorize is not None:
                authorize()
            old = self.role(entity, user)
            if old == "admin" and role != "admin":
                self._refuse_last_admin(entity, user, "take the admin role from")
            if old is None:
                self.db.execute(
                    "INSERT INTO members (entity, user, role, added_at) VALUES (?, ?, ?, ?)",
                    [entity, user, role, time.time()],
                )
            elif old != role:
                self.db.execute(
                    "UPDATE members SET role = ? WHERE entity = ? AND user = ?",
                    [role, entity, user],
                )
        return old

    def remove(self, entity: str, user: str, *, authorize: Authorize | None = None) -> str:
        """Remove ``user`` from ``entity``; returns the role they had. Never the last admin."""
        with self.db.write():
            if not self.exists(entity):
                raise missing(entity)
            if authorize is not None:
                authorize()
            old = self.role(entity, user)
            if old is None:
                raise NotFound(f"user '{user}' is not a member of entity '{entity}'")
            if old == "admin":
                self._refuse_last_admin(entity, user, "remove")
            self.db.execute("DELETE FROM members WHERE entity = ? AND user = ?", [entity, user])
        return old

    def _refuse_last_admin(self, entity: str, user: str, what: str) -> None:
        row = self.db.one(
            "SELECT COUNT(*) AS n FROM members WHERE entity = ? AND role = 'admin'", [entity]
        )
        if row is not None and row["n"] <= 1:
            raise LaunchctlError(
                f"cannot {what} user '{user}': they are the last admin of entity '{entity}';"
                " make another member admin first (`launchctl team add"
                f" {entity} USER --admin`)"
            )
