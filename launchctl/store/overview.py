"""Read-only SQL for ``launchctl status`` (issue 12, item 7): a few grouped queries that
stay fast however many runs the store holds (each reads an index or the held runs only).
"""

from __future__ import annotations

import time

from launchctl.store.db import Database, Row, loads
from launchctl.store.gpus import decode_devices
from launchctl.store.runs import HELD


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
            " created_at, started_at, updated_at"
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
