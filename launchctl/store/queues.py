"""SQL for queues."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from launchctl.errors import LaunchctlError, NotFound
from launchctl.states import State
from launchctl.store.db import Database, Row, dumps, loads
from launchctl.store.runs import HELD, WAITING, transition


def _decode(row: Row | None) -> Row | None:
    if row is not None:
        row["config"] = loads(row["config"]) or {}
        row["paused"] = bool(row["paused"])
    return row


class QueueTable:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self,
        name: str,
        *,
        resource: str,
        entity: str,
        config: dict[str, Any],
        description: str | None,
        config_written: str | None = None,
    ) -> Row:
        """``config``: the one form runs read; ``config_written``: its text as written."""
        now = time.time()
        try:
            with self.db.write():
                self.db.execute(
                    "INSERT INTO queues (name, entity, resource, config, config_written,"
                    " description, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [name, entity, resource, dumps(config), config_written, description,
                     now, now],
                )  # fmt: skip
        except sqlite3.IntegrityError:
            raise LaunchctlError(f"queue '{name}' already exists") from None
        return self.get(name)

    def find(self, name: str) -> Row | None:
        return _decode(self.db.one("SELECT * FROM queues WHERE name = ?", [name]))

    def get(self, name: str) -> Row:
        row = self.find(name)
        if row is None:
            raise NotFound(f"queue '{name}' does not exist (see `launchctl queue list`)")
        return row

    def by_id(self, queue_id: int) -> Row | None:
        return _decode(self.db.one_kept("SELECT * FROM queues WHERE id = ?", [queue_id]))

    def all(self) -> list[Row]:
        rows = self.db.all(
            "SELECT q.*,"
            f" (SELECT COUNT(*) FROM runs r WHERE r.queue_id = q.id AND r.state IN {WAITING})"
            "   AS queued,"
            f" (SELECT COUNT(*) FROM runs r WHERE r.queue_id = q.id AND r.state IN {HELD})"
            "   AS active"
            " FROM queues q ORDER BY q.name"
        )
        return [r for r in (_decode(row) for row in rows) if r is not None]

    def counts(self, queue_id: int) -> dict[str, int]:
        rows = self.db.all(
            "SELECT state, COUNT(*) AS n FROM runs WHERE queue_id = ? GROUP BY state", [queue_id]
        )
        return {r["state"]: r["n"] for r in rows}

    def update(self, name: str, **fields: Any) -> Row:
        if "config" in fields:
            fields["config"] = dumps(fields["config"])
        if "paused" in fields:
            fields["paused"] = int(bool(fields["paused"]))
        fields["updated_at"] = time.time()
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.db.write():
            cur = self.db.execute(
                f"UPDATE queues SET {sets} WHERE name = ?", [*fields.values(), name]
            )
            if cur.rowcount != 1:
                raise NotFound(f"queue '{name}' does not exist (see `launchctl queue list`)")
        return self.get(name)

    def delete(self, name: str, *, force: bool) -> dict[str, int]:
        """Delete a queue. Refused while it has queued or active runs, unless ``force``.

        With ``force``, queued runs are stopped and active ones asked to stop, in the
        same transaction; their history stays, with the queue's name.
        """
        now = time.time()
        with self.db.write():
            queue = self.db.one("SELECT id FROM queues WHERE name = ?", [name])
            if queue is None:
                raise NotFound(f"queue '{name}' does not exist (see `launchctl queue list`)")
            qid = queue["id"]
            queued = self.db.all(
                f"SELECT id FROM runs WHERE queue_id = ? AND state IN {WAITING}", [qid]
            )
            active = self.db.all(
                f"SELECT id FROM runs WHERE queue_id = ? AND state IN {HELD}", [qid]
            )
            if (queued or active) and not force:
                raise LaunchctlError(
                    f"queue '{name}' has {len(queued)} queued and {len(active)} running runs;"
                    " cancel them first or pass --force"
                )
            for run in queued:
                transition(
                    self.db, run["id"], [State.QUEUED], State.STOPPED, at=now,
                    message=f"queue '{name}' deleted", fields={"reason": "queue deleted"},
                )  # fmt: skip
            for run in active:
                self.db.execute(
                    "UPDATE runs SET cancel_requested = 1, updated_at = ? WHERE id = ?",
                    [now, run["id"]],
                )
            self.db.execute("DELETE FROM queues WHERE id = ?", [qid])
        return {"stopped": len(queued), "cancel_requested": len(active)}
