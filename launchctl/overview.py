"""What ``launchctl status`` shows at a glance (issue 12, item 7): each queue's runs by
state, the live agents with their heartbeats and slots, the GPUs in use, and the runs
held now. Read-only; a few grouped queries (``launchctl.store.overview``), so it stays
fast on a store of many thousand runs.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from launchctl.priority import PRIORITY_NAMES
from launchctl.runs import SERVING_WITHIN_S
from launchctl.states import ACTIVE, State
from launchctl.store.overview import OverviewQueries

if TYPE_CHECKING:
    from launchctl.store import Store

# An agent silent (never stopped, no heartbeat within SERVING_WITHIN_S) for up to this
# long is counted as "silent": killed or hung lately. Older ones are history.
SILENT_SINCE_S = 24 * 3600.0
DIRECT = "(direct)"  # the queue name shown for runs launched without a queue


def iso(ts: float | None) -> str | None:
    """A time as ISO 8601 with the local offset, to the second; None stays None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def status(store: Store) -> dict[str, Any]:
    """The whole picture, as plain data: the same for the table and for ``--json``."""
    queries = OverviewQueries(store.db)
    now = time.time()
    agents = queries.agents(within_s=SERVING_WITHIN_S)
    runs = queries.held_runs()
    queues = _queues(queries.queue_counts(), agents)
    _waiting(queues, _waiting_counts(queries), runs)
    return {
        "at": iso(now),
        "queues": queues,
        "agents": [_agent(a, now) for a in agents],
        "silent_agents": queries.silent_agents(within_s=SERVING_WITHIN_S, since_s=SILENT_SINCE_S),
        "gpus": _gpus(queries.gpus(), queries.allocations_without_device()),
        "active_runs": [_run(r, now) for r in runs],
        "stalled_runs": [_stalled(r, now) for r in runs if _is_stalled(r)],
    }


# Why a queued run is not claimable now (``OverviewQueries.waiting_counts``), in the order
# each is decided: held; waits for other runs (--after*); for a time (--delay/--at or a
# retry backoff); for a limit on what is in flight (an array's %N, limits.per_user).
WAIT_REASONS = ("held", "after", "time", "limit")


def _waiting_counts(queries: OverviewQueries) -> list[dict[str, Any]]:
    """Queued runs by queue and why they wait (``queue``, ``why``, ``n``): the store's
    counts, with the runs that are otherwise ready told apart when they are at a limit
    (``workflow.limits_reached``: the claim's ARRAY_OK and PER_USER_OK), from a count of
    the runs in flight per array and per launcher, not one per queued run."""
    from launchctl.workflow import limits_reached

    rows = queries.waiting_counts()
    ready = [r for r in rows if r["why"] == "ready"]
    arrays = queries.arrays_in_flight(sorted({r["array_key"] for r in ready if r["array_key"]}))
    users = queries.per_user_in_flight(sorted({int(r["queue_id"]) for r in ready}))
    for row in ready:
        run = dict(row, array_id=row["array_key"], queue_name=row["queue"])
        if limits_reached(run, arrays, users):
            row["why"] = "limit"
    return rows


def _waiting(
    queues: list[dict[str, Any]], counts: list[dict[str, Any]], runs: list[dict[str, Any]]
) -> None:
    """Give each queue ``waiting`` (its queued runs by why they wait: ``WAIT_REASONS``;
    the rest may be claimed as far as the run goes) and ``stalled`` (its running runs an
    agent found silent for the queue's ``stall_after``)."""
    by_name = {q["name"]: q for q in queues}
    for queue in queues:
        queue["waiting"] = dict.fromkeys(WAIT_REASONS, 0)
        queue["stalled"] = 0
    for row in counts:
        counted = by_name.get(row["queue"])
        if counted is not None and row["why"] in WAIT_REASONS:
            counted["waiting"][row["why"]] += int(row["n"])
    for run in runs:
        held_by = by_name.get(run["queue_name"] or DIRECT) if _is_stalled(run) else None
        if held_by is not None:
            held_by["stalled"] += 1


def _is_stalled(run: dict[str, Any]) -> bool:
    return bool(run.get("stalled_at")) and run["state"] == State.RUNNING


def _stalled(row: dict[str, Any], now: float) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "queue": row["queue_name"],
        "agent": row["agent_id"],
        "stalled_at": iso(row["stalled_at"]),
        "stalled_s": round(max(0.0, now - row["stalled_at"]), 1),
    }


def _queues(rows: list[dict[str, Any]], agents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_name: dict[str | None, dict[str, Any]] = {}
    for row in rows:
        name = row["name"]
        entry = by_name.get(name)
        if entry is None:
            serving = [a["id"] for a in agents if name is not None and name in a["queues"]]
            entry = by_name[name] = {
                "name": name if name is not None else DIRECT,
                "resource": row["resource"],
                "paused": bool(row["paused"]),
                "counts": {},
                "queued": 0,
                "active": 0,
                "total": 0,
                "agents": len(serving),
            }
        state, n = row["state"], int(row["n"])
        if state is None or n == 0:
            continue
        entry["counts"][state] = n
        entry["total"] += n
        if state == State.QUEUED:
            entry["queued"] += n
        elif state in ACTIVE:
            entry["active"] += n
    return list(by_name.values())


def _agent(row: dict[str, Any], now: float) -> dict[str, Any]:
    max_jobs = int(row["max_jobs"])
    return {
        "id": row["id"],
        "host": row["host"],
        "pid": row["pid"],
        "queues": row["queues"],
        "max_jobs": max_jobs,  # -1: no limit
        "used": int(row["used"]),
        "free": None if max_jobs < 0 else max(0, max_jobs - int(row["used"])),
        "started_at": iso(row["started_at"]),
        "heartbeat_at": iso(row["heartbeat_at"]),
        "heartbeat_age_s": round(max(0.0, now - row["heartbeat_at"]), 1),
    }


def _gpus(devices: list[dict[str, Any]], orphans: list[dict[str, Any]]) -> dict[str, Any]:
    listed = [
        {
            "host": d["host"],
            "index": d["idx"],
            "name": d["name"],
            "memory_mb": d["memory_mb"],
            "runs": d["runs"].split(",") if d["runs"] else [],
        }
        for d in devices
    ]
    listed += [
        {
            "host": o["host"],
            "index": o["idx"],
            "name": None,
            "memory_mb": None,
            "runs": o["runs"].split(","),
        }
        for o in orphans
    ]
    return {
        "total": len(devices),
        "in_use": sum(1 for d in listed if d["runs"]),
        "devices": listed,
    }


def _run(row: dict[str, Any], now: float) -> dict[str, Any]:
    started = row["started_at"]
    return {
        "id": row["id"],
        "name": row["name"],
        "queue": row["queue_name"],
        "state": row["state"],
        "agent": row["agent_id"],
        "priority": PRIORITY_NAMES.get(row["priority"], str(row["priority"])),
        "gpus": row["devices"],
        "attempt": int(row["resume_count"]) + 1,
        "created_at": iso(row["created_at"]),
        "started_at": iso(started),
        "running_s": round(now - started, 1) if started is not None else None,
        "stalled_at": iso(row["stalled_at"]) if _is_stalled(row) else None,
    }
