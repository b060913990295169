"""SQL for a sweep's trials and for who schedules a sweep now (issue 15).

A trial is one set of parameters the search proposed, numbered in proposal order
(``seq``), carried by one run of the sweep's queue. The trial and its run are written in
one transaction (``add``): a scheduler killed at any point leaves either both or neither,
so a restarted one never loses a trial nor runs one twice.

The scheduling lease (``sweeps.scheduler_agent`` until ``sweeps.scheduler_lease``) lets
one scheduler at a time work on a sweep; a killed one's sweep is taken up once its lease
has run out.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from launchctl.states import TERMINAL
from launchctl.store.db import Database, Row, dumps, loads
from launchctl.store.runs import insert_queued, sql_states

# The sweep states a scheduler works on: running ones get new trials; paused and stopped
# ones only have their trials in flight scored.
_SCHEDULED_SQL = "('running', 'paused', 'stopped')"
_ENDED = sql_states(TERMINAL)


def _decode(row: Row) -> Row:
    row["params"] = loads(row["params"]) or {}
    return row


class SweepTrialTable:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- the lease ------------------------------------------------------------------------
    def take_lease(
        self, sweep_id: str, agent_id: str, lease_s: float, *, dead: Iterable[str] = ()
    ) -> bool:
        """Hold (or keep holding) the right to schedule ``sweep_id`` for ``lease_s``.

        Taken when nobody holds it, this scheduler does, the holder's lease ran out, or
        the holder is one of ``dead`` (agents whose process is gone); only for a sweep
        that still needs a scheduler. Returns whether it is held now."""
        now = time.time()
        gone = list(dead)
        dead_sql = f" OR scheduler_agent IN ({', '.join('?' for _ in gone)})" if gone else ""
        with self.db.write():
            cur = self.db.execute(
                "UPDATE sweeps SET scheduler_agent = ?, scheduler_lease = ?"
                f" WHERE id = ? AND state IN {_SCHEDULED_SQL} AND (scheduler_agent IS NULL"
                " OR scheduler_agent = ? OR scheduler_lease IS NULL OR scheduler_lease < ?"
                f"{dead_sql})",
                [agent_id, now + lease_s, sweep_id, agent_id, now, *gone],
            )
        return cur.rowcount == 1

    def release(self, sweep_id: str, agent_id: str) -> None:
        """Give the lease back (a scheduler that stops cleanly): another may take it at once."""
        with self.db.write():
            self.db.execute(
                "UPDATE sweeps SET scheduler_agent = NULL, scheduler_lease = NULL"
                " WHERE id = ? AND scheduler_agent = ?",
                [sweep_id, agent_id],
            )

    def release_all(self, agent_id: str) -> None:
        """Give back every sweep ``agent_id`` schedules (an agent that stops cleanly)."""
        with self.db.write():
            self.db.execute(
                "UPDATE sweeps SET scheduler_agent = NULL, scheduler_lease = NULL"
                " WHERE scheduler_agent = ?",
                [agent_id],
            )

    def needing_work(self, queue_names: Iterable[str]) -> list[Row]:
        """The sweeps of ``queue_names`` a scheduler has work on, oldest first, with who
        holds them (``scheduler_agent``, ``scheduler_lease``): running ones, and paused or
        stopped ones with a trial not yet scored."""
        names = list(queue_names)
        if not names:
            return []
        return self.db.all_watched(
            "SELECT s.id, s.state, s.scheduler_agent, s.scheduler_lease FROM sweeps s"
            f" WHERE s.queue_name IN ({', '.join('?' for _ in names)}) AND (s.state = 'running'"
            " OR (s.state IN ('paused', 'stopped') AND EXISTS (SELECT 1 FROM sweep_trials t"
            " WHERE t.sweep_id = s.id AND t.outcome IS NULL))) ORDER BY s.created_at, s.id",
            names,
            ("sweep",),  # made again when a sweep or a trial is written (or another commits)
        )

    def sweep(self, sweep_id: str) -> Row | None:
        """The sweep's row, its JSON columns decoded."""
        row = self.db.one("SELECT * FROM sweeps WHERE id = ?", [sweep_id])
        if row is not None:
            for key in ("config", "scheduler", "launch"):
                row[key] = loads(row[key]) or {}
        return row

    def finish(self, sweep_id: str, agent_id: str, reason: str) -> bool:
        """Mark the sweep finished: only by the scheduler holding it, only from a state in
        which it was scheduled. Returns whether it moved."""
        now = time.time()
        with self.db.write():
            cur = self.db.execute(
                "UPDATE sweeps SET state = 'finished', reason = ?, updated_at = ?, ended_at = ?,"
                " scheduler_agent = NULL, scheduler_lease = NULL"
                " WHERE id = ? AND state IN ('running', 'stopped') AND scheduler_agent = ?",
                [reason, now, now, sweep_id, agent_id],
            )
        return cur.rowcount == 1

    def fail(self, sweep_id: str, agent_id: str, reason: str) -> bool:
        """Mark the sweep failed (its trials cannot be launched), by the scheduler holding it."""
        now = time.time()
        with self.db.write():
            cur = self.db.execute(
                "UPDATE sweeps SET state = 'failed', reason = ?, updated_at = ?, ended_at = ?,"
                " scheduler_agent = NULL, scheduler_lease = NULL"
                f" WHERE id = ? AND state IN {_SCHEDULED_SQL} AND scheduler_agent = ?",
                [reason, now, now, sweep_id, agent_id],
            )
        return cur.rowcount == 1

    # -- trials ---------------------------------------------------------------------------
    def add(
        self, sweep_id: str, seq: int, params: dict[str, Any], run: dict[str, Any], agent_id: str
    ) -> bool:
        """Store trial ``seq`` and its new ``queued`` run in one transaction.

        ``run`` is the row ``launch.submit`` built (checked there). Written only while
        ``agent_id`` holds the sweep's lease and the sweep is running, and only if ``seq``
        is new: returns False (nothing written) otherwise."""
        now = time.time()
        with self.db.write():
            held = self.db.one(
                "SELECT 1 AS ok FROM sweeps WHERE id = ? AND state = 'running'"
                " AND scheduler_agent = ? AND scheduler_lease >= ?",
                [sweep_id, agent_id, now],
            )
            taken = self.db.one(
                "SELECT 1 AS ok FROM sweep_trials WHERE sweep_id = ? AND seq = ?", [sweep_id, seq]
            )
            if held is None or taken is not None:
                return False
            insert_queued(
                self.db, run, now, agent_id=agent_id,
                message=f"launched by sweep {sweep_id} (trial {seq})",
            )  # fmt: skip
            self.db.execute(
                "INSERT INTO sweep_trials (sweep_id, seq, run_id, params, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                [sweep_id, seq, run["id"], dumps(params), now],
            )
        return True

    def all(self, sweep_id: str) -> list[Row]:
        """Every trial of the sweep in proposal order, with its run's state (``run_state``,
        None when the run was deleted) and name."""
        rows = self.db.all(
            "SELECT t.*, r.state AS run_state, r.name AS run_name FROM sweep_trials t"
            " LEFT JOIN runs r ON r.id = t.run_id WHERE t.sweep_id = ? ORDER BY t.seq",
            [sweep_id],
        )
        return [_decode(r) for r in rows]

    def in_flight(self, sweep_id: str) -> int:
        """How many of the sweep's trials have a run that has not ended (queued or held)."""
        row = self.db.one(
            "SELECT COUNT(*) AS n FROM sweep_trials t JOIN runs r ON r.id = t.run_id"
            f" WHERE t.sweep_id = ? AND r.state NOT IN {_ENDED}",
            [sweep_id],
        )
        return int(row["n"]) if row else 0

    def unscored(self, sweep_id: str) -> list[Row]:
        """Trials without an outcome whose run has ended (or was deleted)."""
        rows = self.db.all(
            "SELECT t.*, r.state AS run_state FROM sweep_trials t"
            " LEFT JOIN runs r ON r.id = t.run_id WHERE t.sweep_id = ? AND t.outcome IS NULL"
            f" AND (r.id IS NULL OR r.state IN {_ENDED}) ORDER BY t.seq",
            [sweep_id],
        )
        return [_decode(r) for r in rows]

    def score(
        self, sweep_id: str, seq: int, *, metric: float | None, source: str, outcome: str
    ) -> bool:
        """Record a trial's metric (or why it has none) once: False if it had one already."""
        with self.db.write():
            cur = self.db.execute(
                "UPDATE sweep_trials SET metric = ?, metric_source = ?, outcome = ?,"
                " scored_at = ? WHERE sweep_id = ? AND seq = ? AND outcome IS NULL",
                [metric, source, outcome, time.time(), sweep_id, seq],
            )
        return cur.rowcount == 1

    def next_seq(self, sweep_id: str) -> int:
        row = self.db.one(
            "SELECT COALESCE(MAX(seq), -1) + 1 AS n FROM sweep_trials WHERE sweep_id = ?",
            [sweep_id],
        )
        return int(row["n"]) if row else 0
