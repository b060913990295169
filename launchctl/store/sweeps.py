"""SQL for sweeps (issue 15): one row per sweep, its state changed by guarded updates.

The scheduler's lease columns (``scheduler_agent``, ``scheduler_lease``) and the
``sweep_trials`` table are written by launchctl/store/sweep_trials.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from launchctl.errors import LaunchctlError, NotFound, StateConflict
from launchctl.store.db import Database, Row, dumps, loads

STATES = ("running", "paused", "finished", "stopped", "cancelled", "failed")
ENDED = frozenset({"finished", "cancelled", "failed"})
_JSON = ("config", "scheduler", "launch")


def _decoded(row: Row) -> Row:
    for key in _JSON:
        row[key] = loads(row[key]) or {}
    return row


class SweepTable:
    def __init__(self, db: Database) -> None:
        self.db = db

    def insert(self, row: Row) -> Row:
        """Store a new sweep (state ``running``); its id must be new."""
        now = time.time()
        values = dict(row)
        for key in _JSON:
            values[key] = dumps(values.get(key) or {})
        values.setdefault("state", "running")
        values.update(created_at=now, updated_at=now)
        cols = [
            "id", "entity", "project", "queue_name", "config", "scheduler", "launch",
            "method", "metric_name", "metric_goal", "num_workers", "run_cap", "state",
            "author", "created_at", "updated_at",
        ]  # fmt: skip
        with self.db.write():
            if self.db.one("SELECT 1 FROM sweeps WHERE id = ?", [values["id"]]):
                raise LaunchctlError(f"sweep {values['id']} already exists")
            self.db.execute(
                f"INSERT INTO sweeps ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                [values.get(c) for c in cols],
            )
        return self.get(values["id"])

    def get(self, sweep_id: str) -> Row:
        """One sweep by id, or by a unique prefix of its id."""
        row = self.db.one("SELECT * FROM sweeps WHERE id = ?", [sweep_id])
        if row is None and sweep_id and len(sweep_id) < 8:
            found = self.db.all(
                "SELECT * FROM sweeps WHERE substr(id, 1, ?) = ? LIMIT 2",
                [len(sweep_id), sweep_id],
            )
            if len(found) > 1:
                raise LaunchctlError(f"sweep id prefix '{sweep_id}' names more than one sweep")
            row = found[0] if found else None
        if row is None:
            raise NotFound(f"sweep '{sweep_id}' does not exist (see `launchctl sweep list`)")
        return _decoded(row)

    def select(self, states: Sequence[str] = ()) -> list[Row]:
        """Sweeps, newest first; only those in ``states`` when given."""
        sql = "SELECT * FROM sweeps"
        params: list[object] = []
        if states:
            sql += f" WHERE state IN ({', '.join('?' * len(states))})"
            params += list(states)
        return [_decoded(r) for r in self.db.all(sql + " ORDER BY created_at DESC, id", params)]

    def trial_counts(self, sweep_ids: Iterable[str]) -> dict[str, int]:
        """How many trials each sweep has proposed so far."""
        ids = list(sweep_ids)
        if not ids:
            return {}
        rows = self.db.all(
            f"SELECT sweep_id, COUNT(*) AS n FROM sweep_trials WHERE sweep_id IN"
            f" ({', '.join('?' * len(ids))}) GROUP BY sweep_id",
            ids,
        )
        return {r["sweep_id"]: int(r["n"]) for r in rows}

    def open_run_ids(self, sweep_id: str) -> list[str]:
        """The runs of a sweep's trials that have not ended (queued or active)."""
        rows = self.db.all(
            "SELECT t.run_id FROM sweep_trials t JOIN runs r ON r.id = t.run_id"
            " WHERE t.sweep_id = ? AND r.state NOT IN ('finished', 'failed', 'stopped')"
            " ORDER BY t.seq",
            [sweep_id],
        )
        return [str(r["run_id"]) for r in rows]

    def set_state(
        self, sweep_id: str, new: str, from_states: Sequence[str], *, reason: str | None = None
    ) -> Row:
        """Move a sweep to ``new`` if it is in one of ``from_states`` (one guarded UPDATE);
        else StateConflict naming the state it is in."""
        now = time.time()
        ended = now if new in ENDED else None
        with self.db.write():
            cur = self.db.execute(
                f"UPDATE sweeps SET state = ?, reason = ?, updated_at = ?,"
                f" ended_at = COALESCE(?, ended_at)"
                f" WHERE id = ? AND state IN ({', '.join('?' * len(from_states))})",
                [new, reason, now, ended, sweep_id, *from_states],
            )
            if cur.rowcount != 1:
                row = self.db.one("SELECT state FROM sweeps WHERE id = ?", [sweep_id])
                if row is None:
                    raise NotFound(f"sweep '{sweep_id}' does not exist")
                raise StateConflict(f"sweep {sweep_id} is {row['state']}")
        return self.get(sweep_id)
