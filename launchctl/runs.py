"""What a front end does with runs: list them, show one with its history, cancel one, and
ask whether an agent serves a queue. Launching and rerunning are in ``launch``, following
a run's log in ``follow``; the agent moves runs through their states.
"""

from __future__ import annotations

from collections.abc import Sequence

from launchctl.errors import UsageError
from launchctl.follow import log_path
from launchctl.history import attempts
from launchctl.states import State
from launchctl.store import Row, Store

# An agent that has sent no heartbeat for this long is not counted as serving its queues.
SERVING_WITHIN_S = 120.0
# SQLite integers are 64-bit: a larger --limit is the same as "all".
_MAX_LIMIT = 1 << 62


def listing(
    store: Store, *, queue: str | None = None, states: Sequence[str] = (), limit: int = 50
) -> list[Row]:
    """Runs, newest first: only ``queue``'s, only in ``states``; ``limit`` 0 means all."""
    limit = check_filters(states, limit)
    return store.runs.select(queue=queue, states=states, limit=limit or None)


def check_filters(states: Sequence[str], limit: int) -> int:
    """Refuse an unknown state or a negative limit (a front end may call this before it
    opens the store, so that a refused command creates nothing); returns the limit to use."""
    known = {s.value for s in State}
    for s in states:
        if s not in known:
            raise UsageError(f"unknown state {s!r}: choose from {', '.join(sorted(known))}")
    if limit < 0:
        raise UsageError("--limit must be 0 (all) or more")
    return min(limit, _MAX_LIMIT)


def get(store: Store, run_id: str) -> Row:
    """One run; a unique id prefix is enough."""
    return store.runs.get(run_id)


def details(store: Store, run_id: str) -> Row:
    """One run (a unique id prefix is enough) with its ``events``, its ``attempts`` (one per
    claim) and its ``log_path``."""
    run = store.runs.get(run_id)
    events = store.runs.events(run["id"])
    run["log_path"] = str(log_path(store, run))
    return dict(run, events=events, attempts=attempts(events))


def cancel(store: Store, run_id: str) -> tuple[Row, str]:
    """Cancel a run, if the current user may (its author, or an admin of its entity or its
    queue's); returns the run and its state after: ``stopped`` at once for a queued run,
    else the active state its agent is stopping it from."""
    from launchctl.teams import require_canceller

    run = store.runs.get(run_id)
    user = require_canceller(store, run)
    return run, store.runs.request_cancel(run["id"], by=user)


def waiting_reason(store: Store, run: Row) -> str:
    """Why a queued run has not started, in words: its queue paused, a retry backoff, no
    live agent serving its queue, or the runs ahead of it."""
    import time

    if str(run.get("reason") or "").startswith("waiting"):  # an agent's note: a GPU wait
        return str(run["reason"])
    queue = run.get("queue_name")
    if run.get("queue_id") is None or not queue:
        return "waiting to be claimed by the launch that made it"
    row = store.queues.by_id(run["queue_id"])
    if row is not None and row.get("paused"):
        return f"queue {queue} is paused (resume it with `launchctl queue resume {queue}`)"
    if run.get("not_before") and run["not_before"] > time.time():
        left = int(run["not_before"] - time.time()) + 1
        return f"waiting out a retry backoff ({left}s left) in queue {queue}"
    if not serving_agents(store, queue):
        return (
            f"waiting for an agent: none is serving queue {queue}"
            f" (start one with `launchctl agent -q {queue}`)"
        )
    ahead = sum(
        1
        for r in store.runs.select(queue=queue, states=[State.QUEUED], limit=None)
        if r["id"] != run["id"]
        and (r["priority"], r["enqueued_at"] or 0, r["seq"])
        < (run["priority"], run["enqueued_at"] or 0, run["seq"])
    )
    if ahead:
        return f"waiting in queue {queue} behind {ahead} run{'s' if ahead != 1 else ''}"
    return f"waiting for a free slot on an agent serving queue {queue}"


def serving_agents(store: Store, queue: str) -> list[Row]:
    """The live agents (a heartbeat in the last two minutes) that serve ``queue``."""
    return [a for a in store.agents.live(within_s=SERVING_WITHIN_S) if queue in a["queues"]]
