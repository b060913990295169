"""What a front end does with runs: list them, show one with its history, cancel one, and
ask whether an agent serves a queue. Launching and rerunning are in ``launch``, following
a run's log in ``follow``; the agent moves runs through their states.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from launchctl.errors import UsageError
from launchctl.follow import log_path
from launchctl.history import attempts
from launchctl.states import TERMINAL, State
from launchctl.store import Row, Store

# An agent that has sent no heartbeat for this long is not counted as serving its queues.
SERVING_WITHIN_S = 120.0
# The states a dependency may end in (issue 18).
_ENDED = frozenset(s.value for s in TERMINAL)
# SQLite integers are 64-bit: a larger --limit is the same as "all".
_MAX_LIMIT = 1 << 62


def listing(
    store: Store,
    *,
    queue: str | None = None,
    states: Sequence[str] = (),
    limit: int = 50,
    job: str | None = None,
    project: str | None = None,
    since: str | None = None,
) -> list[Row]:
    """Runs, newest first: only ``queue``'s, only in ``states``, only of ``job`` (NAME for
    every version, NAME:vN or NAME:ALIAS for one), of ``project``, created ``since`` (an
    age such as ``2h`` or ``7d``, or an ISO date); ``limit`` 0 means all. Each row also
    has ``attempts`` (how many times an agent claimed it)."""
    from launchctl.store import housekeeping
    from launchctl.store.runs import select_runs

    limit = check_filters(states, limit)
    start = parse_since(since) if since is not None else None
    job_id = version_id = None
    if job is not None:
        from launchctl import identity
        from launchctl.jobs import find_version

        version = find_version(store, job, prefer=identity.current_user())
        if ":" in job.rpartition("/")[2]:  # NAME:vN or NAME:ALIAS names one version
            version_id = int(version["id"])
        else:
            job_id = int(version["job_id"])
    rows = select_runs(
        store.db, queue=queue, states=states, project=project, job_id=job_id,
        version_id=version_id, since=start, limit=limit or None,
    )  # fmt: skip
    # A deleted queue's runs keep its name (and are listed by it); a name no queue and
    # no run ever had is a typo, not an empty queue: refused as `queue show` refuses it.
    if (
        queue is not None
        and not rows
        and store.queues.find(queue) is None
        and store.db.one("SELECT 1 AS x FROM runs WHERE queue_name = ? LIMIT 1", [queue]) is None
    ):
        store.queues.get(queue)
    counts = housekeeping.attempt_counts(store.db, [r["id"] for r in rows])
    for row in rows:
        row["attempts"] = counts.get(row["id"], 0)
    return rows


def run_config(run: Row) -> dict[str, Any]:
    """The run-config values a run was launched with (``--set``)."""
    config = (run["spec"].get("overrides") or {}).get("run_config")
    return config if isinstance(config, dict) else {}


def config_value(run: Row, key: str) -> str | None:
    """One run-config value as a table shows it; None where the run has no such key."""
    import json

    config = run_config(run)
    if key not in config:
        return None
    value = config[key]
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


# At most this many run-config columns are chosen automatically.
AUTO_COLUMNS = 6


def differing_keys(rows: Sequence[Row]) -> list[str]:
    """The run-config keys whose values differ among ``rows`` (a key some runs lack
    counts), in name order, at most ``AUTO_COLUMNS``."""
    if len(rows) < 2:
        return []
    keys = sorted({k for r in rows for k in run_config(r)})
    return [k for k in keys if len({config_value(r, k) for r in rows}) > 1][:AUTO_COLUMNS]


def parse_columns(text: str | None) -> list[str] | None:
    """``--columns``: a comma-separated list of run-config keys, or ``none``; None when
    not given (choose the differing keys)."""
    if text is None:
        return None
    if text.strip().lower() == "none":
        return []
    keys = [k.strip() for k in text.split(",")]
    if not all(keys) or any(not k.isprintable() for k in keys):
        raise UsageError(
            f"invalid --columns {text!r}: expected run-config keys separated by commas,"
            " e.g. lr,batch_size"
        )
    return list(dict.fromkeys(keys))


_TIMES = ("created_at", "updated_at", "started_at", "ended_at", "enqueued_at", "not_before",
          "lease_expires_at")  # fmt: skip


def iso(ts: float | None) -> str | None:
    """A time as ISO 8601 in local time with its offset, to the second."""
    import datetime as dt

    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def for_json(run: Row) -> Row:
    """A listed run as ``--json`` prints it: times in ISO 8601 and the priority by name,
    as the table shows them."""
    from launchctl.priority import PRIORITY_NAMES

    out = dict(run)
    for key in _TIMES:
        if key in out:
            out[key] = iso(out[key])
    out["priority"] = PRIORITY_NAMES.get(run["priority"], run["priority"])
    return out


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str, option: str = "--older-than") -> float:
    """An age in seconds: ``90s``, ``45m``, ``12h``, ``30d``, ``2w``."""
    value = text.strip().lower()
    unit = _UNITS.get(value[-1:]) if value else None
    if unit is None or not value[:-1].isdigit():
        raise UsageError(
            f"invalid {option} value {text!r}: expected a number and a unit (s, m, h, d, w),"
            " e.g. 30d or 12h"
        )
    return float(int(value[:-1]) * unit)


def parse_since(text: str) -> float:
    """A point in time: an age back from now (``2h``, ``7d``) or an ISO date or date and
    time (``2026-11-20``, ``2026-11-20T09:00``; local time unless it names a zone)."""
    import datetime as dt
    import time

    value = text.strip()
    if value[-1:].lower() in _UNITS and value[:-1].isdigit():
        return time.time() - parse_age(value, "--since")
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"invalid --since value {text!r}: expected an age (2h, 7d) or an ISO date"
            " (2026-11-20 or 2026-11-20T09:00)"
        ) from None
    return moment.timestamp()


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
    from launchctl.sync.wandb_offline import links  # the W&B runs its wandb folders became

    run["wandb_runs"] = links(store, run["id"])
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
    if run.get("held"):  # issue 18: runs hold
        return f"held (`launchctl runs release {run['id']}` lets it be claimed)"
    if run.get("not_before") and run["not_before"] > time.time():
        left = int(run["not_before"] - time.time()) + 1
        if not run.get("retries"):  # issue 18: launch --delay/--at
            return f"not claimable for {left}s more (launched with --delay or --at)"
        return f"waiting out a retry backoff ({left}s left) in queue {queue}"
    if run.get("deps"):  # issue 18: launch --after*
        from launchctl.workflow import annotate, waiting_for

        row = annotate(store, [dict(run, held=False, not_before=None)])[0]
        row["after"] = [d for d in row["after"] if d["state"] not in _ENDED]
        waits = waiting_for(row)
        if waits:
            return "waiting for " + "; ".join(waits)
    from launchctl.workflow import annotate, limit_line  # issue 18: an array's %N, per_user

    limited = annotate(store, [dict(run)])[0]["limited"]
    if limited:
        return "held back by a limit: " + "; ".join(limit_line(lim) for lim in limited)
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
