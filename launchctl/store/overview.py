"""Read-only SQL for ``launchctl status`` (issue 12, item 7): a few grouped queries that
stay fast however many runs the store holds (each reads an index or the held runs only).
"""

from __future__ import annotations

import time
from typing import Any

from launchctl.store.db import Database, Row, loads
from launchctl.store.gpus import decode_devices
from launchctl.store.runs import HELD, READY, WAITING


class OverviewQueries:
    def __init__(self, db: Database) -> None:
        self.db = db

    def queue_counts(self) -> list[Row]:
        """One row per queue and state it has runs in (a queue with none: state NULL).

        Runs whose queue is gone or that were launched direct (no queue) come under a
        NULL queue name. Reads the ``runs_claim`` index (queue_id, state, ...) only.
        """
        queues = self.db.all(
            "SELECT q.id, q.name, q.resource, q.paused, r.state, COUNT(r.queue_id) AS n"
            " FROM queues q LEFT JOIN runs r ON r.queue_id = q.id"
            " GROUP BY q.id, r.state ORDER BY q.name"
        )
        direct = self.db.all(
            "SELECT NULL AS id, NULL AS name, NULL AS resource, 0 AS paused, state,"
            " COUNT(*) AS n FROM runs WHERE queue_id IS NULL GROUP BY state"
        )
        return queues + direct

    def agents(self, *, within_s: float) -> list[Row]:
        """Agents not stopped with a heartbeat in the last ``within_s`` seconds, with the
        number of runs each holds now (``used``)."""
        rows = self.db.all(
            "SELECT a.*, (SELECT COUNT(*) FROM runs r WHERE r.agent_id = a.id"
            f" AND r.state IN {HELD}) AS used"
            " FROM agents a WHERE a.stopped_at IS NULL AND a.heartbeat_at > ?"
            " ORDER BY a.started_at",
            [time.time() - within_s],
        )
        for row in rows:
            row["queues"] = loads(row["queues"]) or []
        return rows

    def silent_agents(self, *, within_s: float, since_s: float) -> int:
        """Agents never stopped whose last heartbeat is older than ``within_s`` but newer
        than ``since_s`` seconds: killed or hung recently."""
        now = time.time()
        row = self.db.one(
            "SELECT COUNT(*) AS n FROM agents WHERE stopped_at IS NULL"
            " AND heartbeat_at <= ? AND heartbeat_at > ?",
            [now - within_s, now - since_s],
        )
        return int(row["n"]) if row else 0

    def held_runs(self) -> list[Row]:
        """The runs agents hold now (claimed, building, starting, running), oldest first."""
        rows = self.db.all(
            "SELECT id, name, queue_name, state, agent_id, priority, devices, resume_count,"
            " created_at, started_at, updated_at, stalled_at"
            f" FROM runs WHERE state IN {HELD} ORDER BY seq"
        )
        for row in rows:
            row["devices"] = decode_devices(row["devices"])
        return rows

    def gpus(self) -> list[Row]:
        """Every known device, with the runs allocated on it (a comma list, or NULL)."""
        return self.db.all(
            "SELECT g.host, g.idx, g.name, g.memory_mb,"
            " (SELECT group_concat(a.run_id, ',') FROM gpu_allocations a"
            "  WHERE a.host = g.host AND a.idx = g.idx) AS runs"
            " FROM gpus g ORDER BY g.host, g.idx"
        )

    def allocations_without_device(self) -> list[Row]:
        """Allocations on devices no agent reported (a --gpus list on another host...)."""
        return self.db.all(
            "SELECT a.host, a.idx, group_concat(a.run_id, ',') AS runs FROM gpu_allocations a"
            " WHERE NOT EXISTS (SELECT 1 FROM gpus g WHERE g.host = a.host AND g.idx = a.idx)"
            " GROUP BY a.host, a.idx ORDER BY a.host, a.idx"
        )

    # -- why queued runs wait (issue 18) ---------------------------------------------------
    def waiting_counts(self) -> list[Row]:
        """Queued runs counted by queue and by the first reason each may not be claimed
        now: ``held``, ``after`` (waits for other runs), ``time`` (``--delay``/``--at`` or
        a retry backoff), else ``ready``; the same conditions the claim reads (``READY``,
        ``not_before``). ``ready`` rows are split by ``array_key`` (a throttled array's
        id), ``array_limit`` and ``author``, so the caller tells those at a limit
        (``arrays_in_flight``, ``per_user_in_flight``) without a count per run. Reads
        each queue's queued runs by ``runs_claim``."""
        return self.db.all(
            "SELECT q.name AS queue, q.id AS queue_id, CASE WHEN r.held THEN 'held'"
            f" WHEN r.deps > 0 AND NOT ({READY}) THEN 'after'"
            " WHEN r.not_before IS NOT NULL AND r.not_before > ? THEN 'time'"
            " ELSE 'ready' END AS why,"
            " CASE WHEN r.array_limit IS NOT NULL THEN r.array_id END AS array_key,"
            " r.array_limit, r.author, COUNT(*) AS n"
            " FROM queues q CROSS JOIN runs r"  # queue by queue, through runs_claim
            f" WHERE r.queue_id = q.id AND r.state IN {WAITING}"
            " GROUP BY q.id, why, array_key, r.array_limit, r.author",
            [time.time()],
        )

    def arrays_in_flight(self, array_ids: list[str]) -> dict[str, int]:
        """How many runs of each array are in flight (held by an agent), as the claim's
        ``ARRAY_OK`` counts them; one query for all (the ``runs_array`` index)."""
        out: dict[str, int] = {}
        for start in range(0, len(array_ids), 500):
            chunk = array_ids[start : start + 500]
            for row in self.db.all(
                "SELECT array_id, COUNT(*) AS n FROM runs"
                f" WHERE array_id IN ({', '.join('?' for _ in chunk)}) AND state IN {HELD}"
                " GROUP BY array_id",
                chunk,
            ):
                out[str(row["array_id"])] = int(row["n"])
        return out

    def per_user_in_flight(self, queue_ids: list[int]) -> dict[int, tuple[int, dict[Any, int]]]:
        """For each of ``queue_ids`` that sets ``limits.per_user``: (the limit, the runs in
        flight by launcher: ``runs.author``, None for runs with no recorded launcher), as
        the claim's ``PER_USER_OK`` counts them. Two queries for all (the queues, then
        their held runs by the ``runs_author`` index)."""
        if not queue_ids:
            return {}
        marks = ", ".join("?" for _ in queue_ids)
        limits = {
            int(r["id"]): int(r["n"])
            for r in self.db.all(
                "SELECT id, json_extract(config, '$.limits.per_user') AS n FROM queues"
                f" WHERE id IN ({marks}) AND json_extract(config, '$.limits.per_user') IS NOT NULL",
                queue_ids,
            )
        }
        if not limits:
            return {}
        out: dict[int, tuple[int, dict[Any, int]]] = {q: (n, {}) for q, n in limits.items()}
        ids = list(limits)
        for row in self.db.all(
            # runs_claim (queue_id, state, ...) reads the held runs only; runs_author, which
            # the GROUP BY tempts the planner to, reads every run of the queue
            "SELECT queue_id, author, COUNT(*) AS n FROM runs INDEXED BY runs_claim"
            f" WHERE queue_id IN ({', '.join('?' for _ in ids)}) AND state IN {HELD}"
            " GROUP BY queue_id, author",
            ids,
        ):
            out[int(row["queue_id"])][1][row["author"]] = int(row["n"])
        return out
