"""SQL for hooks when a run ends (migration m011): the ends a trigger records, and the
durable outbox of deliveries owed. No policy: which hooks apply, who may run them and
how is ``launchctl.hooks``' business.

Issue 18: a running run found silent (``runs.stalled_at``, m013) is marked here, with its
note and the deliveries its ``on: [stalled]`` hooks are owed, in one transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from launchctl.store.db import Database, Row, dumps, loads
from launchctl.store.runs import insert_event

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
SKIPPED = "skipped"
DONE = (DELIVERED, FAILED, SKIPPED)


def _marks(values: Sequence[Any]) -> str:
    return "(" + ", ".join("?" for _ in values) + ")" if values else "(NULL)"


def _gone(column: str, dead: Sequence[str]) -> tuple[str, list[Any]]:
    """``column`` names an agent that is gone: never registered, recorded a stop, or one of
    ``dead`` (unstopped, its process gone: only its host can tell)."""
    return (
        f"({column} IS NULL OR {column} IN {_marks(dead)}"
        f" OR {column} NOT IN (SELECT id FROM agents WHERE stopped_at IS NULL))",
        list(dead),
    )


class HookTable:
    def __init__(self, db: Database) -> None:
        self.db = db

    def mark_agent(self, agent_id: str, has_hooks: bool) -> None:
        """Say whether ``agent_id``'s config has hooks: the trigger records the ends of its
        runs only then (or when their queue has hooks)."""
        with self.db.write():
            self.db.execute(
                "UPDATE agents SET hooks = ? WHERE id = ?", [1 if has_hooks else 0, agent_id]
            )

    def busy(self, me: str) -> bool:
        """Whether a pass may find work: an end recorded, or a delivery pending anywhere
        (``me``'s own, or another agent's it may have to take over)."""
        row = self.db.one(
            "SELECT EXISTS (SELECT 1 FROM hook_ends)"
            f" OR EXISTS (SELECT 1 FROM hook_deliveries WHERE state = '{PENDING}') AS busy"
        )
        return bool(row and row["busy"])

    # -- ends ------------------------------------------------------------------------------
    def ends_for(
        self, me: str, queue_ids: Iterable[int], dead: Sequence[str], *, limit: int = 100
    ) -> list[Row]:
        """Ended runs whose hooks ``me`` should work out: the runs it held, and those of its
        queues that no live agent holds (cancelled while queued, or their agent gone)."""
        ids = list(queue_ids)
        gone, params = _gone("agent_id", dead)
        return self.db.all(
            f"SELECT * FROM hook_ends WHERE agent_id = ? OR (queue_id IN {_marks(ids)} AND {gone})"
            " ORDER BY at LIMIT ?",
            [me, *ids, *params, limit],
        )

    def expand(self, run_id: str, deliveries: Sequence[dict[str, Any]]) -> bool:
        """Replace the end of ``run_id`` by the deliveries it is owed, in one transaction;
        False when another agent did it first."""
        now = time.time()
        with self.db.write():
            cur = self.db.execute("DELETE FROM hook_ends WHERE run_id = ?", [run_id])
            if cur.rowcount != 1:
                return False
            self._owe(run_id, deliveries, now)
        return True

    def _owe(self, run_id: str, deliveries: Sequence[dict[str, Any]], now: float) -> None:
        for d in deliveries:
            self.db.execute(
                "INSERT INTO hook_deliveries (run_id, source, queue_id, owner, owner_uid,"
                " kind, hook, facts, max_attempts, next_at, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    run_id, d["source"], d.get("queue_id"), d["owner"], d["owner_uid"],
                    d["kind"], dumps(d["hook"]), dumps(d["facts"]), d["max_attempts"],
                    now, now,
                ],
            )  # fmt: skip

    # -- stuck runs (issue 18) ---------------------------------------------------------------
    def mark_stalled(
        self,
        run_id: str,
        since: float,
        note: str,
        deliveries: Sequence[dict[str, Any]],
        agent_id: str | None,
    ) -> bool:
        """Mark a running run stalled since ``since`` (its last output), note it and owe its
        stall hooks, in one transaction; False when it is not running or already marked."""
        now = time.time()
        with self.db.write():
            cur = self.db.execute(
                "UPDATE runs SET stalled_at = ? WHERE id = ? AND state = 'running'"
                " AND stalled_at IS NULL",
                [since, run_id],
            )
            if cur.rowcount != 1:
                return False
            insert_event(self.db, run_id, "running", "running", agent_id, note, now)
            self._owe(run_id, deliveries, now)
        return True

    def clear_stalled(self, run_id: str, note: str | None, agent_id: str | None) -> bool:
        """Clear a run's ``stalled_at`` (it wrote again, or it ended), with ``note`` when
        given; False when it was not marked."""
        now = time.time()
        with self.db.write():
            row = self.db.one(
                "SELECT state FROM runs WHERE id = ? AND stalled_at IS NOT NULL", [run_id]
            )
            if row is None:
                return False
            self.db.execute("UPDATE runs SET stalled_at = NULL WHERE id = ?", [run_id])
            if note:
                insert_event(self.db, run_id, row["state"], row["state"], agent_id, note, now)
        return True

    def pending_ends(self) -> int:
        row = self.db.one("SELECT COUNT(*) AS n FROM hook_ends")
        return int(row["n"]) if row else 0

    # -- deliveries ------------------------------------------------------------------------
    def take_over(self, me: str, uid: int, queue_ids: Iterable[int], dead: Sequence[str]) -> int:
        """Make ``me`` the owner of pending deliveries whose owner is gone: a queue's hooks
        for a queue it serves, an agent config's hooks only for an agent of the same user."""
        ids = list(queue_ids)
        gone, params = _gone("owner", dead)
        with self.db.write():
            cur = self.db.execute(
                f"UPDATE hook_deliveries SET owner = ? WHERE state = '{PENDING}' AND owner != ?"
                f" AND {gone} AND ((source = 'queue' AND queue_id IN {_marks(ids)})"
                " OR (source = 'agent' AND owner_uid = ?))",
                [me, me, *params, *ids, uid],
            )
            return cur.rowcount

    def due(self, owner: str, now: float, *, limit: int = 20) -> list[Row]:
        rows = self.db.all(
            f"SELECT * FROM hook_deliveries WHERE state = '{PENDING}' AND owner = ?"
            " AND next_at <= ? ORDER BY next_at, id LIMIT ?",
            [owner, now, limit],
        )
        return [_decoded(r) for r in rows]

    def next_at(self, owner: str) -> float | None:
        row = self.db.one(
            f"SELECT MIN(next_at) AS t FROM hook_deliveries WHERE state = '{PENDING}'"
            " AND owner = ?",
            [owner],
        )
        return None if row is None or row["t"] is None else float(row["t"])

    def attempt(self, delivery_id: int, owner: str) -> bool:
        """Count an attempt before making it (a crash half way still counts); False when
        the delivery is no longer this owner's to make."""
        with self.db.write():
            cur = self.db.execute(
                "UPDATE hook_deliveries SET attempts = attempts + 1"
                f" WHERE id = ? AND owner = ? AND state = '{PENDING}'",
                [delivery_id, owner],
            )
            return cur.rowcount == 1

    def settle(
        self, delivery_id: int, state: str, *, error: str | None = None, retry_at: float | None
    ) -> None:
        """Record how an attempt went: ``state`` (done), or pending again at ``retry_at``."""
        with self.db.write():
            if retry_at is not None:
                self.db.execute(
                    "UPDATE hook_deliveries SET next_at = ?, last_error = ? WHERE id = ?",
                    [retry_at, error, delivery_id],
                )
            else:
                self.db.execute(
                    "UPDATE hook_deliveries SET state = ?, last_error = ?, done_at = ?"
                    " WHERE id = ?",
                    [state, error, time.time(), delivery_id],
                )

    def for_run(self, run_id: str) -> list[Row]:
        rows = self.db.all("SELECT * FROM hook_deliveries WHERE run_id = ? ORDER BY id", [run_id])
        return [_decoded(r) for r in rows]

    def waiting_end(self, run_id: str) -> bool:
        """Whether the hooks of ``run_id`` are not worked out yet."""
        return self.db.one("SELECT 1 AS x FROM hook_ends WHERE run_id = ?", [run_id]) is not None


def _decoded(row: Row) -> Row:
    row["hook"] = loads(row["hook"]) or {}
    row["facts"] = loads(row["facts"]) or {}
    return row
