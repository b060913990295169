"""When a queued run may be claimed (issue 18): holds, delayed starts and dependencies.

The store's claim enforces all three in the transaction that claims
(``launchctl.store.runs.READY``, ``not_before``); this module parses what a user types
(``launch --delay/--at/--after*``, ``runs hold/release``), checks it before anything is
written, and says in words what a run waits for.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

from launchctl.errors import StateConflict, UsageError
from launchctl.store import Row, Store
from launchctl.teams import PermissionDenied, require_canceller

# The longest delay or the furthest --at (a typo such as 2000d is refused, not queued).
MAX_DELAY_S = 366 * 86400
# The most runs one run may wait for (named one by one; an array named by its id counts
# its runs, up to MAX_ARRAY_DEPS in all).
MAX_DEPS = 1000
MAX_ARRAY_DEPS = 10_000

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DELAY = re.compile(r"(?:(\d{1,9})([smhdw]))+")
_PART = re.compile(r"(\d{1,9})([smhdw])")
_TIME_OF_DAY = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")

# The flag each dependency kind comes from, and what it waits for.
FLAGS = {"any": "--after", "ok": "--after-ok", "fail": "--after-fail"}
_WAITS = {"any": "to end", "ok": "to finish", "fail": "to fail"}


def parse_delay(text: str) -> float:
    """``--delay``: seconds from a number and a unit, or several (``90s``, ``45m``, ``2h``,
    ``1h30m``, ``3d``, ``1w``)."""
    value = text.strip().lower()
    if not _DELAY.fullmatch(value):
        raise UsageError(
            f"invalid --delay {text!r}: expected a number and a unit (s, m, h, d, w),"
            " e.g. 90s, 2h or 1h30m"
        )
    seconds = float(sum(int(n) * _UNITS[u] for n, u in _PART.findall(value)))
    if seconds > MAX_DELAY_S:
        raise UsageError(f"invalid --delay {text!r}: at most 366 days")
    return seconds


def parse_at(text: str, now: float | None = None) -> float:
    """``--at``: an ISO date and time (``2026-12-01T02:00``, local time unless it names a
    zone) or a time of day (``02:00``: the next such time, today or tomorrow), as ``at``
    reads them. A date and time already past is refused, as ``at`` refuses it: a run
    meant for a night that has gone is more likely a typo than a wish to start now."""
    import datetime as dt

    value = text.strip()
    now = time.time() if now is None else now
    clock = _TIME_OF_DAY.fullmatch(value)
    if clock:
        hour, minute, second = (int(g or 0) for g in clock.groups())
        if hour > 23 or minute > 59 or second > 59:
            raise UsageError(f"invalid --at {text!r}: no such time of day")
        today = dt.datetime.fromtimestamp(now)
        moment = dt.datetime.combine(today.date(), dt.time(hour, minute, second))
        if moment.timestamp() <= now:
            moment = dt.datetime.combine(today.date() + dt.timedelta(days=1), moment.time())
        return moment.timestamp()
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"invalid --at {text!r}: expected an ISO date and time (2026-12-01T02:00) or a"
            " time of day (02:00)"
        ) from None
    if len(value) <= 10:  # a date alone: midnight is seldom meant, so say the time
        raise UsageError(f"invalid --at {text!r}: give a time too, e.g. {value}T02:00")
    at = moment.timestamp()
    if at <= now:
        raise UsageError(f"--at {text!r} is in the past (it is {_local(now)} now)")
    if at - now > MAX_DELAY_S:
        raise UsageError(f"invalid --at {text!r}: at most 366 days ahead")
    return at


def start_time(delay: str | None, at: str | None) -> float | None:
    """When a launched run may first be claimed (``--delay`` or ``--at``), or None."""
    if delay is not None and at is not None:
        raise UsageError("cannot use both --delay and --at: pick one")
    if delay is not None:
        return time.time() + parse_delay(delay)
    if at is not None:
        return parse_at(at)
    return None


def split_ids(values: Iterable[str], flag: str) -> list[str]:
    """Run ids from repeatable, comma-separated ``--after*`` values, in order, once each."""
    ids: list[str] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part or not part.isprintable() or len(part) > 64:
                raise UsageError(f"invalid {flag} {value!r}: expected run ids separated by commas")
            if part not in ids:
                ids.append(part)
    return ids


def parse_after(
    after: Sequence[str], after_ok: Sequence[str], after_fail: Sequence[str]
) -> list[tuple[str, str]]:
    """(run id or prefix, kind) for each run named by ``--after``, ``--after-ok`` and
    ``--after-fail``; a run named under two of them is refused."""
    out: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for kind, values in (("any", after), ("ok", after_ok), ("fail", after_fail)):
        for run_id in split_ids(values, FLAGS[kind]):
            if run_id in seen:
                raise UsageError(
                    f"run {run_id} is named by both {FLAGS[seen[run_id]]} and {FLAGS[kind]}:"
                    " pick one"
                )
            seen[run_id] = kind
            out.append((run_id, kind))
    if len(out) > MAX_DEPS:
        raise UsageError(f"a run may wait for at most {MAX_DEPS} runs")
    return out


def resolve_deps(
    store: Store, named: Sequence[tuple[str, str]], user: str
) -> list[tuple[str, str]]:
    """The full ids of the runs a launch waits for, checked: each exists, is one ``user``
    may wait for (their own, or of an entity they belong to) and can still meet its
    condition (an ``--after-ok`` on a run that already failed is refused, not queued to
    fail). A new run cannot be waited for by an older one, so no cycle can form."""
    out: list[tuple[str, str]] = []
    fail_deps: list[Row] = []
    for run, given, kind in _expand(store, named):
        if any(run["id"] == d for d, _ in out):
            raise UsageError(f"run {run['id']} is named twice (as {given!r})")
        author = run["spec"].get("author")
        if author != user and store.teams.role(str(run["entity"]), user) is None:
            raise PermissionDenied(
                f"user '{user}' may not wait for run {run['id']}: it is neither theirs"
                f" nor of an entity they belong to ('{run['entity']}')"
            )
        if kind == "ok" and run["state"] in ("failed", "stopped"):
            raise StateConflict(
                f"run {run['id']} already ended {run['state']}: --after-ok can never hold"
            )
        if kind == "fail":
            fail_deps.append(run)
        out.append((run["id"], kind))
    if fail_deps and all(r["state"] == "finished" for r in fail_deps):
        ids = ", ".join(r["id"] for r in fail_deps[:5]) + (", ..." if len(fail_deps) > 5 else "")
        raise StateConflict(f"run {ids} already finished: --after-fail can never hold")
    if len(out) > MAX_ARRAY_DEPS:
        raise UsageError(f"a run may wait for at most {MAX_ARRAY_DEPS} runs (arrays counted)")
    return out


def _expand(store: Store, named: Sequence[tuple[str, str]]) -> Iterable[tuple[Row, str, str]]:
    """Each run named (a unique prefix is enough; NotFound says so), with what it was
    named as and its kind; an array's id (``a-...``, issue 18) names every run of that
    array, as Slurm's ``--dependency=afterok:<array job>`` waits for every task."""
    from launchctl import arrays

    for given, kind in named:
        if not arrays.is_array_id(given):
            yield store.runs.get(given), given, kind
            continue
        for run in store.arrays.runs(arrays.resolve(store, given)):
            yield run, given, kind


def doom_reason(deps: list[Row]) -> str:
    """Why a run whose dependencies can no longer be met failed (``RunTable.end_doomed``)."""
    for dep in deps:
        if dep["kind"] == "ok" and dep["state"] != "finished":
            ended = "was deleted" if dep["state"] is None else f"ended {dep['state']}"
            return f"dependency {dep['dep_id']} {ended} (launched with --after-ok)"
    ids = ", ".join(d["dep_id"] for d in deps if d["kind"] == "fail")
    return f"dependencies {ids} all finished (launched with --after-fail)"


# -- holds -------------------------------------------------------------------------------
def hold(store: Store, run_id: str, held: bool) -> tuple[Row, bool]:
    """Hold or release a queued run, if the current user may (as ``runs cancel`` decides:
    its author, or an admin of its entity or its queue's). Returns the run and whether it
    changed (holding a held run changes nothing)."""
    run = store.runs.get(run_id)
    user = require_canceller(store, run, action="hold" if held else "release")
    if run["state"] != "queued":
        raise StateConflict(
            f"run {run['id']} is {run['state']}: only a queued run can be"
            f" {'held' if held else 'released'}"
        )
    return run, store.runs.set_held(run["id"], held, user)


# -- saying it -----------------------------------------------------------------------------
def _local(ts: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def local_time(ts: float) -> str:
    """A store time (seconds since the epoch) as local ISO time, to the second."""
    return _local(ts)


def annotate(store: Store, rows: list[Row]) -> list[Row]:
    """Give listed runs ``held`` (a bool), ``after`` (the runs each waits for: run, kind,
    state) and ``eligible_at`` (ISO, when a queued run's delay or backoff ends; None when
    it has none or it is over)."""
    now = time.time()
    deps = store.runs.deps_of([r["id"] for r in rows if r.get("deps")])
    for row in rows:
        row["held"] = bool(row.get("held"))
        row["after"] = [
            {"run": d["dep_id"], "kind": d["kind"], "state": d["state"]}
            for d in deps.get(row["id"], [])
        ]
        nb = row.get("not_before")
        queued = row.get("state") == "queued"
        row["eligible_at"] = _local(nb) if queued and nb and nb > now else None
    _annotate_limits(store, rows)
    return rows


def _annotate_limits(store: Store, rows: list[Row]) -> None:
    """Give listed runs ``limited``: the limits on what is in flight that keep a queued
    run from being claimed now, each ``{"limit": "array", "array", "in_flight", "max"}``
    (``launch --array ...%N``) or ``{"limit": "per_user", "user", "queue", "in_flight",
    "max"}`` (its queue's ``limits.per_user``; ``user`` None for a run with no recorded
    launcher); [] for the rest. As the claim counts them (``ARRAY_OK``, ``PER_USER_OK``),
    in at most three queries for all the rows, whatever their number."""
    from launchctl.store.overview import OverviewQueries

    queued = [r for r in rows if r.get("state") == "queued"]
    for row in rows:
        row["limited"] = []
    if not queued:
        return
    queries = OverviewQueries(store.db)
    arrays = queries.arrays_in_flight(
        sorted({str(r["array_id"]) for r in queued if r.get("array_limit") is not None})
    )
    users = queries.per_user_in_flight(
        sorted({int(r["queue_id"]) for r in queued if r.get("queue_id") is not None})
    )
    for row in queued:
        row["limited"] = limits_reached(row, arrays, users)


def limits_reached(
    row: Row, arrays: dict[str, int], users: dict[int, tuple[int, dict[Any, int]]]
) -> list[dict[str, Any]]:
    """The limits a queued run (``array_id``, ``array_limit``, ``queue_id``, ``author``,
    ``queue_name``) is at, from the counts of runs in flight (``OverviewQueries``'s
    ``arrays_in_flight`` and ``per_user_in_flight``), as the claim's ``ARRAY_OK`` and
    ``PER_USER_OK`` decide: a run may be claimed while fewer than the limit are."""
    out: list[dict[str, Any]] = []
    cap = row.get("array_limit")
    if cap is not None and row.get("array_id") is not None:
        held = arrays.get(str(row["array_id"]), 0)
        if held >= cap:
            out.append({"limit": "array", "array": row["array_id"], "in_flight": held, "max": cap})
    if row.get("queue_id") in users:
        cap, by_user = users[row["queue_id"]]
        held = by_user.get(row.get("author"), 0)
        if held >= cap:
            out.append(
                {"limit": "per_user", "user": row.get("author"), "queue": row.get("queue_name"),
                 "in_flight": held, "max": cap}
            )  # fmt: skip
    return out


def state_cell(row: Row) -> str:
    """``runs list``'s state: ``queued (held)``, ``queued (at 2026-...)``, ``queued
    (after 2 runs)`` for a queued run that may not be claimed yet (after ``annotate``)."""
    state = str(row["state"])
    if state != "queued":
        return state
    notes = []
    if row.get("held"):
        notes.append("held")
    if row.get("eligible_at"):
        notes.append(f"at {row['eligible_at'][:19].replace('T', ' ')}")
    waiting = [
        d for d in row.get("after") or [] if d["state"] not in ("finished", "failed", "stopped")
    ]
    if waiting:
        notes.append(
            f"after {waiting[0]['run']}" if len(waiting) == 1 else f"after {len(waiting)} runs"
        )
    for limit in row.get("limited") or []:  # an array's %N, a queue's limits.per_user
        what = "array" if limit["limit"] == "array" else "per_user"
        notes.append(f"{what} {limit['in_flight']}/{limit['max']} in flight")
    return f"{state} ({', '.join(notes)})" if notes else state


def waiting_for(row: Row) -> list[str]:
    """What a queued run waits for before any agent may claim it, one line each (``runs
    show``; after ``annotate``)."""
    if row.get("state") != "queued":
        return []
    lines = []
    if row.get("held"):
        lines.append(f"held (`launchctl runs release {row['id']}` lets it be claimed)")
    if row.get("eligible_at"):
        lines.append(f"not before {row['eligible_at']}")
    for dep in row.get("after") or []:
        state = dep["state"] or "deleted"
        lines.append(
            f"run {dep['run']} {_WAITS[dep['kind']]} ({FLAGS[dep['kind']]}; it is {state})"
        )
    lines += [limit_line(limit) for limit in row.get("limited") or []]
    return lines


def limit_line(limit: dict[str, Any]) -> str:
    """One ``limited`` entry (``annotate``) in words: ``array 3kx9q2ab: 2 of 2 in flight
    (%2)``, or as ``launchctl.limits.why_waiting`` says a per-user limit."""
    if limit["limit"] == "array":
        held, cap = limit["in_flight"], limit["max"]
        return f"array {limit['array']}: {held} of {cap} in flight (%{cap})"
    from launchctl.limits import describe  # its words, the lowered-limit case included

    return describe(limit["user"], limit["in_flight"], limit["max"], limit["queue"])


def check_launch_flags(*, queued: bool, remote: bool, when: float | None, after: bool) -> None:
    """``--delay/--at/--after*`` only with ``-q``: a direct launch starts at once."""
    if not (when is not None or after):
        return
    flag = "--delay/--at" if when is not None else "--after"
    if remote:
        raise UsageError(f"{flag} goes with a local queue (-q), not --remote-queue")
    if not queued:
        raise UsageError(f"{flag} needs a queue (-q): a direct launch starts at once")


def as_fields(when: float | None, deps: list[tuple[str, str]]) -> dict[str, Any]:
    """The run-row fields a launch adds (``build_run``'s caller passes them to ``insert``)."""
    out: dict[str, Any] = {}
    if when is not None:
        out["not_before"] = when
    if deps:
        out["after"] = deps
    return out
