"""SQL for agents: registration and heartbeats."""

from __future__ import annotations

import time

from launchctl.store.db import Database, Row, dumps, loads


class AgentTable:
    def __init__(self, db: Database) -> None:
        self.db = db

    def register(
        self, agent_id: str, *, host: str, pid: int, queues: list[str], max_jobs: int
    ) -> None:
        now = time.time()
        with self.db.write():
            self.db.execute(
                "INSERT INTO agents (id, host, pid, queues, max_jobs, started_at, heartbeat_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [agent_id, host, pid, dumps(queues), max_jobs, now, now],
            )

    def heartbeat(self, agent_id: str) -> None:
        with self.db.write():
            self.db.execute(
                "UPDATE agents SET heartbeat_at = ? WHERE id = ?", [time.time(), agent_id]
            )

    def stopped(self, agent_id: str) -> None:
        with self.db.write():
            self.db.execute(
                "UPDATE agents SET stopped_at = ? WHERE id = ?", [time.time(), agent_id]
            )

    def unstopped_on(self, host: str, *, besides: str) -> list[Row]:
        """Agents on ``host``, other than ``besides``, that never recorded a stop (alive or
        killed: only their host can tell, by their pid)."""
        return self.db.all(
            "SELECT * FROM agents WHERE host = ? AND stopped_at IS NULL AND id != ?",
            [host, besides],
        )

    def live(self, *, within_s: float) -> list[Row]:
        """Agents that have not stopped and sent a heartbeat recently."""
        rows = self.db.all(
            "SELECT * FROM agents WHERE stopped_at IS NULL AND heartbeat_at > ?",
            [time.time() - within_s],
        )
        for row in rows:
            row["queues"] = loads(row["queues"]) or []
        return rows
