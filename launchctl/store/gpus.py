"""SQL for GPUs: the machine's devices, which run holds which, reservations, the claim.

Allocations are keyed by (host, device index), so every agent on one machine shares
one pool. A trigger (built from ``launchctl.states.ACTIVE`` by migration
``m007_run_states``) deletes a run's allocations in the same transaction as any move that
takes it out of the held states, however the run ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from launchctl.states import State
from launchctl.store.db import Database, Row, dumps, loads
from launchctl.store.runs import HELD, WAITING, insert_event, transition, waiting_sql

# How many waiting runs one claim looks at, in claim order, for one that fits.
SCAN_LIMIT = 200
# A reservation whose agent has sent no heartbeat for this long is dropped.
STALE_AGENT_S = 180.0

# The waiting runs of one queue, in claim order (the same as RunTable.claim_next's).
_CANDIDATES = waiting_sql(
    "r.id, r.spec, r.resource, COALESCE(r.enqueued_at, r.created_at) AS waiting_since"
)


class Device(Protocol):
    """What the store records of a GPU (``launchctl.gpus.devices.Device`` is one)."""

    @property
    def index(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def memory_mb(self) -> int | None: ...
    @property
    def uuid(self) -> str | None: ...


class Plan(Protocol):
    """A planner's choice (``launchctl.gpus.policy.Plan`` is one): the run to claim, its
    devices and sharing, and the reservations to record."""

    @property
    def run_id(self) -> str | None: ...
    @property
    def devices(self) -> list[int]: ...
    @property
    def sharing(self) -> int: ...
    @property
    def reserve(self) -> dict[str, list[int]]: ...


# The GPU policy (``launchctl.gpus.policy.plan``), passed in: the store holds none.
Planner = Callable[[Row, list[Row], list[Row], list[Row], float], Plan]


def device_text(indices: Iterable[int]) -> str:
    """``GPUs 0,1`` as the event log says it (tests read it back)."""
    return "GPUs " + ",".join(str(i) for i in indices)


class GpuTable:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- the machine's devices ------------------------------------------------------------
    def report(self, host: str, devices: Sequence[Device], source: str) -> None:
        """Record ``host``'s devices as an agent found them.

        Found by NVML or nvidia-smi, they replace what was known; a configured list
        (no GPU could be seen) adds to it.
        """
        now = time.time()
        with self.db.write():
            if source != "configured":
                self.db.execute("DELETE FROM gpus WHERE host = ?", [host])
            for d in devices:
                self.db.execute(
                    "INSERT OR REPLACE INTO gpus (host, idx, name, memory_mb, uuid, source,"
                    " reported_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [host, d.index, d.name, d.memory_mb, d.uuid, source, now],
                )

    def inventory(self, host: str | None = None) -> list[Row]:
        """Known devices, by host then index."""
        if host is None:
            return self.db.all("SELECT * FROM gpus ORDER BY host, idx")
        return self.db.all("SELECT * FROM gpus WHERE host = ? ORDER BY idx", [host])

    def machine(self, host: str) -> tuple[str, list[int]] | None:
        """The device indices of ``host`` (else of the host with most); None if none known."""
        rows = self.inventory(host) or self.inventory()
        if not rows:
            return None
        by_host: dict[str, list[int]] = {}
        for row in rows:
            by_host.setdefault(row["host"], []).append(row["idx"])
        name = max(by_host, key=lambda h: len(by_host[h]))
        return name, by_host[name]

    # -- who holds what -------------------------------------------------------------------
    def allocations(self, host: str | None = None) -> list[Row]:
        """Every allocation, with its run's name, state and queue."""
        sql = (
            "SELECT a.*, r.name AS run_name, r.state AS run_state, r.queue_name"
            " FROM gpu_allocations a JOIN runs r ON r.id = a.run_id"
        )
        if host is None:
            return self.db.all(sql + " ORDER BY a.host, a.idx, a.at")
        return self.db.all(sql + " WHERE a.host = ? ORDER BY a.idx, a.at", [host])

    def reservations(self, host: str | None = None) -> list[Row]:
        if host is None:
            return self.db.all("SELECT * FROM gpu_reservations ORDER BY host, idx")
        return self.db.all("SELECT * FROM gpu_reservations WHERE host = ? ORDER BY idx", [host])

    def free_stale(self, host: str) -> int:
        """Free devices no held run stands behind (a crash, a hand edit); returns how many."""
        with self.db.write():
            freed = self.db.execute(
                "DELETE FROM gpu_allocations WHERE host = ? AND run_id NOT IN"
                f" (SELECT id FROM runs WHERE state IN {HELD})",
                [host],
            ).rowcount
            self._drop_stale_reservations(host, time.time())
        return int(freed)

    def _drop_stale_reservations(self, host: str, now: float) -> None:
        """Reservations for runs no longer waiting, in paused queues, or of a silent agent."""
        self.db.execute(
            "DELETE FROM gpu_reservations WHERE host = ? AND (run_id NOT IN"
            "  (SELECT r.id FROM runs r JOIN queues q ON q.id = r.queue_id"
            f"   WHERE r.state IN {WAITING} AND q.paused = 0)"
            " OR agent_id NOT IN (SELECT id FROM agents WHERE stopped_at IS NULL"
            "   AND heartbeat_at > ?))",
            [host, now - STALE_AGENT_S],
        )

    # -- claiming -------------------------------------------------------------------------
    def claim_with_devices(
        self,
        queue_id: int,
        agent_id: str,
        lease_s: float,
        *,
        host: str,
        planner: Planner,
    ) -> str | None:
        """Claim a waiting run of the queue together with its devices, atomically.

        In one write transaction: read the pool (allocations and reservations of
        ``host``) and the waiting runs in claim order, let ``planner`` choose (see
        ``launchctl.gpus.policy.plan``), then record its reservations, claim the run
        and insert its allocations. Two agents on one machine can never hand out one
        device twice. Returns the claimed run's id.
        """
        now = time.time()
        with self.db.write():
            queue = self.db.one("SELECT * FROM queues WHERE id = ? AND paused = 0", [queue_id])
            if queue is None:
                return None
            queue["config"] = loads(queue["config"]) or {}
            self._drop_stale_reservations(host, now)
            allocations = self.db.all(
                "SELECT idx, run_id, sharing FROM gpu_allocations WHERE host = ?", [host]
            )
            reservations = self.db.all(
                "SELECT idx, run_id FROM gpu_reservations WHERE host = ?", [host]
            )
            waiting = self.db.all(_CANDIDATES, [queue_id, now, SCAN_LIMIT])
            chosen = planner(queue, waiting, allocations, reservations, now)
            for run_id, indices in chosen.reserve.items():
                self._reserve(host, run_id, indices, agent_id, now)
            if chosen.run_id is None:
                return None
            message = device_text(chosen.devices) if chosen.devices else None
            transition(
                self.db, chosen.run_id, [State.QUEUED], State.CLAIMED, by=agent_id,
                message=message, at=now,
                fields={
                    "agent_id": agent_id, "lease_expires_at": now + lease_s,
                    "devices": dumps(chosen.devices),
                },
            )  # fmt: skip
            self.db.execute("DELETE FROM gpu_reservations WHERE run_id = ?", [chosen.run_id])
            for index in chosen.devices:
                self.db.execute(
                    "INSERT INTO gpu_allocations (host, idx, run_id, sharing, agent_id, at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [host, index, chosen.run_id, chosen.sharing, agent_id, now],
                )
        return str(chosen.run_id)

    def _reserve(
        self, host: str, run_id: str, indices: list[int], agent_id: str, now: float
    ) -> None:
        self.db.execute("DELETE FROM gpu_reservations WHERE run_id = ?", [run_id])
        for index in indices:
            self.db.execute(
                "INSERT INTO gpu_reservations (host, idx, run_id, agent_id, at)"
                " VALUES (?, ?, ?, ?, ?)",
                [host, index, run_id, agent_id, now],
            )
        message = f"{device_text(indices)} reserved: it waited past the backfill bound"
        # A note on the waiting run: no state change.
        insert_event(self.db, run_id, State.QUEUED, State.QUEUED, agent_id, message, now)


def decode_devices(value: Any) -> list[int] | None:
    """A run's ``devices`` column: a JSON list of indices, or None (no GPU scheduling)."""
    if value is None or isinstance(value, list):
        return value
    decoded = loads(value)
    return [int(i) for i in decoded] if isinstance(decoded, list) else None
