"""SQL for W&B run-queue items (``remote_items``) and the calls owed to a server (``sync_outbox``).

A ``remote_items`` row is a W&B run-queue item this store pulled (``direction`` 'pulled':
a local run carries it, ``run_id``) or pushed (``direction`` 'pushed': ``item_id`` is known
once the server took it). ``acked_at`` / ``failed_at`` say that the ack or fail of a pulled
item was decided; the outbox delivers it.

An outbox row is one call to make (``kind``: push, ack, fail) with its JSON ``payload``.
``sent_at`` is NULL while owed, the time it went through once sent, and minus the time a
sender took it while it is being sent: a claim, so two senders (an agent and a `launchctl
sync`) never make the same call twice. A claim older than ``CLAIM_S`` belongs to a sender
that died; it is owed again.
"""

from __future__ import annotations

import time
from typing import Any

from launchctl.states import TERMINAL
from launchctl.store.db import Database, Row, dumps, loads

# Seconds after which an outbox row a sender took, and never marked, is owed again.
CLAIM_S = 600.0


def _decode(row: Row) -> Row:
    row["payload"] = loads(row["payload"]) or {}
    return row


class RemoteTable:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- remote_items ---------------------------------------------------------------------
    def add_item(
        self,
        *,
        direction: str,
        base_url: str,
        entity: str,
        project: str,
        queue: str,
        item_id: str | None = None,
        run_id: str | None = None,
        agent_id: str | None = None,
        acked: bool = False,
    ) -> int:
        now = time.time()
        with self.db.write():
            cur = self.db.execute(
                "INSERT INTO remote_items (run_id, direction, base_url, entity, project, queue,"
                " item_id, agent_id, acked_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [run_id, direction, base_url, entity, project, queue, item_id, agent_id,
                 now if acked else None, now],
            )  # fmt: skip
        return int(cur.lastrowid or 0)

    def item(self, row_id: int) -> Row | None:
        return self.db.one("SELECT * FROM remote_items WHERE id = ?", [row_id])

    def find_item(self, base_url: str, item_id: str) -> Row | None:
        """The row of a server's item, pulled or pushed (the newest, if both)."""
        return self.db.one(
            "SELECT * FROM remote_items WHERE base_url = ? AND item_id = ? ORDER BY id DESC",
            [base_url, item_id],
        )

    def items(
        self, *, direction: str | None = None, base_url: str | None = None, limit: int = 500
    ) -> list[Row]:
        where, params = [], []
        if direction is not None:
            where.append("direction = ?")
            params.append(direction)
        if base_url is not None:
            where.append("base_url = ?")
            params.append(base_url)
        sql = "SELECT * FROM remote_items"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return self.db.all(sql + " ORDER BY id DESC LIMIT ?", [*params, limit])

    def items_of_run(self, run_id: str) -> list[Row]:
        return self.db.all("SELECT * FROM remote_items WHERE run_id = ? ORDER BY id", [run_id])

    def pulled_open(self, base_url: str) -> list[Row]:
        """Pulled items with no fail decided whose run has not ended after it started (it
        waits, runs, or ended before it started), with the run's state, stage, reason and
        start time."""
        ended = ", ".join(f"'{s.value}'" for s in sorted(TERMINAL))
        return self.db.all(
            "SELECT i.*, r.state AS run_state, r.stage AS run_stage, r.reason AS run_reason,"
            " r.started_at AS run_started_at FROM remote_items i JOIN runs r ON r.id = i.run_id"
            " WHERE i.direction = 'pulled' AND i.base_url = ? AND i.failed_at IS NULL"
            f" AND (r.started_at IS NULL OR r.state NOT IN ({ended})) ORDER BY i.id",
            [base_url],
        )

    def set_item_id(self, row_id: int, item_id: str) -> None:
        with self.db.write():
            self.db.execute("UPDATE remote_items SET item_id = ? WHERE id = ?", [item_id, row_id])

    # -- deciding an ack or a fail: the item's mark and the outbox row, in one transaction --
    def owe(
        self,
        base_url: str,
        kind: str,
        payload: dict[str, Any],
        *,
        run_id: str | None = None,
        item_row: int | None = None,
        mark: str | None = None,
    ) -> int:
        """Add an outbox row; with ``item_row`` and ``mark`` ('acked_at' or 'failed_at'),
        mark that item in the same transaction (only if it was not marked: returns 0 then,
        and adds nothing, so an ack or a fail is owed once)."""
        if mark not in (None, "acked_at", "failed_at"):
            raise ValueError(mark)
        now = time.time()
        with self.db.write():
            if item_row is not None and mark is not None:
                cur = self.db.execute(
                    f"UPDATE remote_items SET {mark} = ? WHERE id = ? AND {mark} IS NULL",
                    [now, item_row],
                )
                if cur.rowcount != 1:
                    return 0
            cur = self.db.execute(
                "INSERT INTO sync_outbox (base_url, kind, payload, run_id, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                [base_url, kind, dumps(payload), run_id, now],
            )
        return int(cur.lastrowid or 0)

    # -- the outbox -----------------------------------------------------------------------
    def owed(self, base_url: str | None = None) -> list[Row]:
        """Calls not sent yet (in-flight claims older than ``CLAIM_S`` count), oldest first."""
        stale = -(time.time() - CLAIM_S)
        sql = "SELECT * FROM sync_outbox WHERE (sent_at IS NULL OR (sent_at < 0 AND sent_at > ?))"
        params: list[Any] = [stale]
        if base_url is not None:
            sql += " AND base_url = ?"
            params.append(base_url)
        return [_decode(r) for r in self.db.all(sql + " ORDER BY id", params)]

    def outbox(self, limit: int = 500) -> list[Row]:
        """Every outbox row, newest first (sent ones included)."""
        rows = self.db.all("SELECT * FROM sync_outbox ORDER BY id DESC LIMIT ?", [limit])
        return [_decode(r) for r in rows]

    def claim(self, row_id: int) -> bool:
        """Take an owed row to send it; False when another sender has it or it was sent."""
        now = time.time()
        with self.db.write():
            cur = self.db.execute(
                "UPDATE sync_outbox SET sent_at = ?, attempts = attempts + 1 WHERE id = ?"
                " AND (sent_at IS NULL OR (sent_at < 0 AND sent_at > ?))",
                [-now, row_id, -(now - CLAIM_S)],
            )
        return cur.rowcount == 1

    def sent(self, row_id: int, *, note: str | None = None) -> None:
        with self.db.write():
            self.db.execute(
                "UPDATE sync_outbox SET sent_at = ?, last_error = ? WHERE id = ?",
                [time.time(), note, row_id],
            )

    def unsent(self, row_id: int, error: str) -> None:
        """The call did not go through (the server is offline): owed again."""
        with self.db.write():
            self.db.execute(
                "UPDATE sync_outbox SET sent_at = NULL, last_error = ? WHERE id = ?",
                [error[:500], row_id],
            )
