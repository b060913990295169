"""SQL for runs and their events: insert, atomic claim, guarded state moves, leases.

Every state change in the store, whoever asks for it (a move, a claim, a cancel, a GPU
claim, a queue's deletion), goes through ``transition``; every SQL string that names
states is built from ``launchctl.states``' sets.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from launchctl.errors import NotFound, StateConflict
from launchctl.states import ACTIVE, TERMINAL, EventKind, State, check_move, ordered
from launchctl.store.db import Database, Row, dumps, loads


def sql_states(states: Iterable[str]) -> str:
    """A set of states as an SQL list, ``('claimed', 'building', ...)``, in declared order.

    For the named sets of ``launchctl.states`` only: ``ordered`` refuses anything that is
    not a state name, so no other text can reach the SQL.
    """
    return "(" + ", ".join(f"'{s.value}'" for s in ordered(states)) + ")"


# The held states and the waiting one, as SQL lists.
HELD = sql_states(ACTIVE)
WAITING = sql_states([State.QUEUED])


# -- when a queued run may be claimed (issue 18) -------------------------------------------
# How a run waits for another (``run_deps.kind``), as Slurm's --dependency says it:
# ``any`` (afterany) until it ends, ``ok`` (afterok) until it finishes, ``fail``
# (afternotok) until it ends otherwise. A dependency that is gone (deleted after it
# ended) counts as ended and not finished.
DEP_KINDS = ("any", "ok", "fail")
_ENDED = sql_states(TERMINAL)
_NOT_OK = sql_states(TERMINAL - {State.FINISHED})


def _dep_exists(kind: str | None, test: str) -> str:
    """EXISTS a dependency of run ``r`` (of ``kind``, or any) whose run ``x`` passes ``test``."""
    of_kind = f" AND d.kind = '{kind}'" if kind else ""
    return (
        "EXISTS (SELECT 1 FROM run_deps d LEFT JOIN runs x ON x.id = d.dep_id"
        f" WHERE d.run_id = r.id{of_kind} AND ({test}))"
    )


_UNENDED = f"x.id IS NOT NULL AND x.state NOT IN {_ENDED}"
_ENDED_NOT_OK = f"x.id IS NULL OR x.state IN {_NOT_OK}"
# An --after-ok dependency ended otherwise; or every --after-fail one finished.
DOOMED = (
    f"({_dep_exists('ok', _ENDED_NOT_OK)}"
    f" OR ({_dep_exists('fail', '1')} AND NOT {_dep_exists('fail', _UNENDED)}"
    f" AND NOT {_dep_exists('fail', _ENDED_NOT_OK)}))"
)
# Not held, and every dependency ended as its kind asks (``deps`` is 0 for most runs:
# their claim never reads ``run_deps``).
READY = (
    f"r.held = 0 AND (r.deps = 0 OR (NOT {_dep_exists(None, _UNENDED)}"
    f" AND NOT {_dep_exists('ok', _ENDED_NOT_OK)}"
    f" AND (NOT {_dep_exists('fail', '1')} OR {_dep_exists('fail', _ENDED_NOT_OK)})))"
)


# Limits on what is in flight (issue 18), counted in the claim's own transaction: an
# array's ``%N`` (``launch --array 0-15%4``), and a queue's ``limits: {per_user: N}``
# (the runs of the same launcher in that queue's held states).
# Each is one uncorrelated subquery, which SQLite computes once per statement, not once
# per waiting run: the arrays at their %N (through ``runs_array``; behind 11,000 runs of
# one %4 array a claim's scan takes 7 ms, against 30 ms for a count per waiting run)...
ARRAY_OK = (
    "(r.array_limit IS NULL OR r.array_id NOT IN (SELECT a.array_id FROM runs a"
    f" WHERE a.array_id IS NOT NULL AND a.state IN {HELD}"
    " GROUP BY a.array_id HAVING COUNT(*) >= MAX(a.array_limit)))"
)
# ... and the (queue, launcher) pairs at their limit (limited queues first, then their
# held runs through ``runs_claim``; with 10,000 of one user's runs held back in a store
# of 110,000, a claim's scan takes 3 ms instead of 20-46 ms). Runs with no recorded
# launcher (NULL) count together, as one launcher.
_PER_USER = "json_extract(uq.config, '$.limits.per_user')"
PER_USER_OK = (
    "(r.queue_id, COALESCE(r.author, '')) NOT IN (SELECT u.queue_id, COALESCE(u.author, '')"
    " FROM queues uq CROSS JOIN runs u"  # CROSS JOIN: the few limited queues drive it
    f" WHERE u.queue_id = uq.id AND u.state IN {HELD} AND {_PER_USER} IS NOT NULL"
    f" GROUP BY u.queue_id, u.author HAVING COUNT(*) >= {_PER_USER})"
)
# What READY leaves out besides, for every claim (``q`` is the run's queue).
UNDER_LIMITS = f"{ARRAY_OK} AND {PER_USER_OK}"


def waiting_sql(columns: str) -> str:
    """The waiting runs of one unpaused queue that may be claimed now, in claim order:
    highest priority first, then the longest waiting (a requeued run waits again from
    the end). Parameters: queue id, now, limit. The one definition of claim order: the
    plain claim and the GPU claim both read it. A run that is held, not due yet (a retry
    backoff, ``launch --delay/--at``) or waits for other runs (``--after*``) is left out:
    the claim that reads this is one transaction, so no agent starts it early."""
    return (
        f"SELECT {columns} FROM runs r JOIN queues q ON q.id = r.queue_id"
        f" WHERE r.queue_id = ? AND r.state IN {WAITING} AND q.paused = 0"
        f" AND (r.not_before IS NULL OR r.not_before <= ?) AND {READY} AND {UNDER_LIMITS}"
        " ORDER BY r.priority, r.enqueued_at, r.seq LIMIT ?"
    )


# How many waiting runs a claim reads first (``claim_first``).
CLAIM_PAGE = 4

# The start of the reason a queued run waits with (``note_waiting``).
WAIT_PREFIX = "waiting: "

# Columns a state move may set besides the state itself.
MOVE_FIELDS = frozenset(
    {
        "stage", "reason", "exit_code", "agent_id", "lease_expires_at", "pid", "pid_started",
        "workdir", "log_path", "started_at", "ended_at", "resume_count", "cancel_requested",
        "image", "enqueued_at", "not_before", "retries",
    }
)  # fmt: skip
# ... and what only the store's own claims set.
_STATE_FIELDS = MOVE_FIELDS | {"devices"}


def _decode(row: Row | None) -> Row | None:
    if row is not None:
        row["spec"] = loads(row["spec"]) or {}
        row["cancel_requested"] = bool(row["cancel_requested"])
        if row.get("devices") is not None:
            row["devices"] = loads(row["devices"])
    return row


class RunTable:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- creating -------------------------------------------------------------------------
    def insert(
        self, run: dict[str, Any], *, claim_for: str | None = None, lease_s: float = 0.0
    ) -> Row:
        """Store a new ``queued`` run; with ``claim_for``, claim it for that agent at once.

        Both happen in one transaction, so no other agent can take a run launched
        directly (``launchctl launch`` without ``-q``).
        """
        now = time.time()
        run = dict(run)
        after: list[tuple[str, str]] = list(run.pop("after", None) or [])
        with self.db.write():
            self._check_deps(after)
            insert_queued(self.db, run, now, after=after)
            if claim_for is not None:
                transition(
                    self.db, run["id"], [State.QUEUED], State.CLAIMED, by=claim_for,
                    message="claimed by launch", at=now,
                    fields={"agent_id": claim_for, "lease_expires_at": now + lease_s},
                )  # fmt: skip
        return self.get(run["id"])

    # -- reading --------------------------------------------------------------------------
    def find(self, run_id: str) -> Row | None:
        return _decode(self.db.one("SELECT * FROM runs WHERE id = ?", [run_id]))

    def get(self, run_id: str) -> Row:
        row = self.find(run_id)
        if row is None:
            # Let users type a unique prefix, as with git hashes.
            matches = self.db.all(
                "SELECT id FROM runs WHERE substr(id, 1, ?) = ? ORDER BY id LIMIT 4",
                [len(run_id), run_id],
            )
            if len(matches) == 1 and run_id:
                row = self.find(matches[0]["id"])
            elif len(matches) > 1 and run_id:
                shown = ", ".join(m["id"] for m in matches[:3]) + (
                    ", ..." if len(matches) > 3 else ""
                )
                raise NotFound(f"run id '{run_id}' is ambiguous ({shown}): give more of it")
        if row is None:
            raise NotFound(f"run '{run_id}' does not exist (see `launchctl runs list`)")
        return row

    def state(self, run_id: str) -> str:
        row = self.db.one("SELECT state FROM runs WHERE id = ?", [run_id])
        if row is None:
            raise NotFound(f"run '{run_id}' does not exist")
        return str(row["state"])

    def cancel_requested(self, run_id: str) -> bool:
        """Whether a cancel was asked for the run (a start checks it last): one column,
        not the whole row with its spec decoded."""
        row = self.db.one("SELECT cancel_requested FROM runs WHERE id = ?", [run_id])
        if row is None:
            raise NotFound(f"run '{run_id}' does not exist")
        return bool(row["cancel_requested"])

    def select(
        self, *, queue: str | None = None, states: Iterable[str] = (), limit: int | None = 50
    ) -> list[Row]:
        """Runs, newest first (``select_runs`` has every filter)."""
        return select_runs(self.db, queue=queue, states=states, limit=limit)

    def events(self, run_id: str | None = None) -> list[Row]:
        if run_id is None:
            return self.db.all("SELECT * FROM events ORDER BY id")
        return self.db.all("SELECT * FROM events WHERE run_id = ? ORDER BY id", [run_id])

    def last_event_id(self) -> int:
        """The newest event's id (0 for none): where a change feed starts (the web view)."""
        row = self.db.one("SELECT COALESCE(MAX(id), 0) AS n FROM events")
        return int(row["n"]) if row else 0

    def events_after(self, event_id: int, limit: int = 1000) -> list[Row]:
        """Events newer than ``event_id``, oldest first, at most ``limit``: the web view's
        change feed (one indexed range read, cheap enough to ask a few times a second)."""
        return self.db.all(
            "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", [event_id, limit]
        )

    def cancels_held_by(self, agent_id: str) -> list[str]:
        """The runs ``agent_id`` holds whose cancel was asked for (ids only: the agent asks
        every pass)."""
        rows = self.db.all_watched(
            f"SELECT id FROM runs WHERE agent_id = ? AND state IN {HELD} AND cancel_requested = 1",
            [agent_id],
            ("cancel_requested",),  # set only by writes that name it (or another process)
        )
        return [row["id"] for row in rows]

    def has_queued(self, queue_ids: Iterable[int], *, besides: Iterable[str] = ()) -> bool:
        """Whether a run of ``queue_ids`` may be claimed now, leaving out the ``besides``
        runs (those an agent cannot give what they ask for: they wait for another)."""
        ids = list(queue_ids)
        if not ids:
            return False
        skip = list(besides)
        not_in = f" AND r.id NOT IN ({', '.join('?' for _ in skip)})" if skip else ""
        row = self.db.one(
            "SELECT EXISTS (SELECT 1 FROM runs r JOIN queues q ON q.id = r.queue_id"
            f" WHERE r.state IN {WAITING} AND q.paused = 0"
            f" AND (r.not_before IS NULL OR r.not_before <= ?) AND {READY} AND {UNDER_LIMITS}"
            f" AND r.queue_id IN ({', '.join('?' for _ in ids)}){not_in}) AS e",
            [time.time(), *ids, *skip],
        )
        return bool(row and row["e"])

    def next_retry_at(self, queue_ids: Iterable[int]) -> float | None:
        """When the earliest queued run that waits out a retry backoff, or a delayed start
        (``launch --delay/--at``), may be claimed: when the agent wakes next."""
        ids = list(queue_ids)
        if not ids:
            return None
        row = self.db.one(
            "SELECT MIN(r.not_before) AS t FROM runs r JOIN queues q ON q.id = r.queue_id"
            f" WHERE r.state IN {WAITING} AND q.paused = 0 AND r.not_before > ? AND {READY}"
            f" AND {UNDER_LIMITS}"
            f" AND r.queue_id IN ({', '.join('?' for _ in ids)})",
            [time.time(), *ids],
        )
        return float(row["t"]) if row and row["t"] is not None else None

    # -- claiming -------------------------------------------------------------------------
    def claim_next(self, queue_id: int, agent_id: str, lease_s: float) -> Row | None:
        """Claim the highest-priority, oldest queued run of an unpaused queue, atomically.

        The pick (``waiting_sql``) and the guarded move, in one write transaction that
        holds the write lock from its start: two agents can never take the same run.
        """
        now = time.time()
        with self.db.write():
            row = self.db.one(waiting_sql("r.id"), [queue_id, now, 1])
            if row is None:
                return None
            transition(
                self.db, row["id"], [State.QUEUED], State.CLAIMED, by=agent_id, at=now,
                fields={"agent_id": agent_id, "lease_expires_at": now + lease_s},
            )  # fmt: skip
        return self.get(row["id"])

    def claim_first(
        self,
        queue_id: int,
        agent_id: str,
        lease_s: float,
        choose: Callable[[Row, list[Row]], str | None],
        *,
        scan: int = 200,
    ) -> Row | None:
        """Claim the waiting run of an unpaused queue that ``choose`` picks, atomically.

        ``choose`` gets the queue (its config decoded) and waiting runs in claim order
        (id, spec, resource) and returns the id to claim, or None: first the first
        ``CLAIM_PAGE`` of them, then, if it took none, the rest of the first ``scan``. So
        it must take the first run that fits (``launchctl.gpus.waiting.without_gpus``
        does). The reads and the claim happen in one write transaction, as in
        ``claim_next``.
        """
        now = time.time()
        with self.db.write():
            queue = self.db.one_kept("SELECT * FROM queues WHERE id = ? AND paused = 0", [queue_id])
            if queue is None:
                return None
            queue["config"] = loads(queue["config"]) or {}
            # The first few runs first: ``choose`` almost always takes the first (a run
            # that asks for no GPUs), so the rest of the ``scan`` (and their specs) is
            # read only when it passes over all of them. It sees the same runs in the
            # same order either way.
            columns = waiting_sql("r.id, r.spec, r.resource")
            first = self.db.all(columns, [queue_id, now, min(scan, CLAIM_PAGE)])
            if not first:
                return None
            run_id = choose(queue, first)
            if run_id is None and len(first) == CLAIM_PAGE < scan:
                rest = self.db.all(columns + " OFFSET ?", [queue_id, now, scan - CLAIM_PAGE,
                                                          CLAIM_PAGE])  # fmt: skip
                run_id = choose(queue, rest) if rest else None
            if run_id is None:
                return None
            claimed: list[Row] = []
            transition(
                self.db, run_id, [State.QUEUED], State.CLAIMED, by=agent_id, at=now,
                fields={"agent_id": agent_id, "lease_expires_at": now + lease_s},
                returning=claimed,
            )  # fmt: skip
        return _decode(claimed[0])

    def claim(self, run_id: str, agent_id: str, lease_s: float) -> Row | None:
        """Claim one named waiting run (to fail it at once, saying why); None if it is no
        longer waiting."""
        now = time.time()
        with self.db.write():
            try:
                transition(
                    self.db, run_id, [State.QUEUED], State.CLAIMED, by=agent_id, at=now,
                    fields={"agent_id": agent_id, "lease_expires_at": now + lease_s},
                )  # fmt: skip
            except StateConflict:
                return None
        return self.get(run_id)

    def note_waiting(self, run_id: str, why: str) -> bool:
        """Why a queued run waits (``waiting: ...``, from an agent that cannot run it): its
        ``reason`` while it waits, and a note, unless it says so already. Its claim clears
        it. Returns whether it was written."""
        now = time.time()
        with self.db.write():
            row = self.db.one("SELECT state, reason FROM runs WHERE id = ?", [run_id])
            if row is None or row["state"] != State.QUEUED or row["reason"] == why:
                return False
            self.db.execute(
                f"UPDATE runs SET reason = ? WHERE id = ? AND state IN {WAITING}", [why, run_id]
            )
            self._event(run_id, row["state"], row["state"], None, why, now)
        return True

    def renew_leases(self, agent_id: str, lease_s: float) -> int:
        now = time.time()
        with self.db.write():
            cur = self.db.execute(
                f"UPDATE runs SET lease_expires_at = ? WHERE agent_id = ? AND state IN {HELD}",
                [now + lease_s, agent_id],
            )
        return cur.rowcount

    # -- holds and dependencies (issue 18) ------------------------------------------------
    def _check_deps(self, after: list[tuple[str, str]]) -> None:
        """Inside the insert's transaction: every dependency exists (checked again, so one
        deleted since the launch checked it is refused, not waited for)."""
        for dep_id, kind in after:
            if kind not in DEP_KINDS:
                raise ValueError(f"unknown dependency kind {kind!r}")
            if self.db.one("SELECT 1 AS x FROM runs WHERE id = ?", [dep_id]) is None:
                raise NotFound(f"run '{dep_id}' does not exist (see `launchctl runs list`)")

    def deps_of(self, run_ids: Iterable[str]) -> dict[str, list[Row]]:
        """The runs each of ``run_ids`` waits for: ``dep_id``, ``kind`` and the dependency's
        ``state`` (None when it was deleted), in dependency-id order."""
        ids = list(run_ids)
        out: dict[str, list[Row]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = self.db.all(
                "SELECT d.run_id, d.dep_id, d.kind, x.state FROM run_deps d"
                " LEFT JOIN runs x ON x.id = d.dep_id"
                f" WHERE d.run_id IN ({', '.join('?' for _ in chunk)}) ORDER BY d.dep_id",
                chunk,
            )
            for row in rows:
                out.setdefault(row["run_id"], []).append(row)
        return out

    def set_held(self, run_id: str, held: bool, by: str) -> bool:
        """Hold (or release) a queued run, with an event naming ``by``; returns whether it
        changed. A run that is no longer queued is refused (``StateConflict``): the check
        and the change are one transaction, as the claim that would take it is."""
        now = time.time()
        verb = "held" if held else "released"
        with self.db.write():
            row = self.db.one("SELECT state, held FROM runs WHERE id = ?", [run_id])
            if row is None:
                raise NotFound(f"run '{run_id}' does not exist")
            if row["state"] != State.QUEUED:
                raise StateConflict(
                    f"run {run_id} is {row['state']}: only a queued run can be {verb}"
                )
            if bool(row["held"]) == held:
                return False
            self.db.execute(
                f"UPDATE runs SET held = ?, updated_at = ? WHERE id = ? AND state IN {WAITING}",
                [int(held), now, run_id],
            )
            self._event(run_id, row["state"], row["state"], None, f"{verb} by {by}", now)
        return True

    def _waiting_on_others(self, ids: list[int]) -> bool:
        """Whether a queued run of ``ids`` waits for others (the partial index
        ``runs_waiting_deps``). Kept from pass to pass (``Database.all_watched``): only a
        write naming ``deps`` (a run that waits, made or edited), a new run, a run back in
        its queue (``enqueued_at``), or another process's commit can add one; the runs
        this agent ends cannot."""
        return bool(
            self.db.all_watched(
                f"SELECT 1 FROM runs WHERE queue_id IN ({', '.join('?' for _ in ids)})"
                f" AND deps > 0 AND state = '{State.QUEUED.value}' LIMIT 1",
                ids,
                ("deps", "into runs", "enqueued_at"),
            )
        )

    def _doomed(self, ids: list[int]) -> list[str]:
        return [
            r["id"]
            for r in self.db.all(
                "SELECT r.id FROM runs r"
                f" WHERE r.queue_id IN ({', '.join('?' for _ in ids)})"
                f" AND r.deps > 0 AND r.state = '{State.QUEUED.value}' AND {DOOMED}"
                " ORDER BY r.seq",
                ids,
            )
        ]

    def end_doomed(
        self, queue_ids: Iterable[int], agent_id: str, reason: Callable[[list[Row]], str]
    ) -> list[tuple[str, str]]:
        """Fail the queued runs of ``queue_ids`` whose dependencies can no longer be met
        (an ``--after-ok`` one ended otherwise, or every ``--after-fail`` one finished):
        claimed by ``agent_id`` and failed at stage ``agent`` with ``reason(deps)`` in one
        transaction, so a run never waits forever and two agents never both end it. The
        first read uses a partial index of the queued runs with dependencies; most passes
        stop there. Returns (run id, reason) for each."""
        ids = list(queue_ids)
        if not ids or not self._waiting_on_others(ids) or not self._doomed(ids):
            return []
        ended: list[tuple[str, str]] = []
        now = time.time()
        with self.db.write():
            for run_id in self._doomed(ids):
                why = reason(self.deps_of([run_id]).get(run_id, []))
                transition(
                    self.db, run_id, [State.QUEUED], State.CLAIMED, by=agent_id, at=now,
                    fields={"agent_id": agent_id, "lease_expires_at": now},
                )  # fmt: skip
                transition(
                    self.db, run_id, [State.CLAIMED], State.FAILED, by=agent_id, at=now,
                    holder=agent_id, fields={"stage": "agent", "reason": why},
                )  # fmt: skip
                ended.append((run_id, why))
        return ended

    # -- moving ---------------------------------------------------------------------------
    def move(
        self,
        run_id: str,
        sources: Iterable[str],
        to: str,
        *,
        agent_id: str | None = None,
        message: str | None = None,
        via: tuple[str, dict[str, Any]] | None = None,
        **fields: Any,
    ) -> str:
        """The core's move (``launchctl.states.move``), in its own transaction: ``agent_id``
        must hold the run (or nobody does) and is recorded on the event. Returns the old
        state. ``via``: a state to pass through first and its fields (its event's text as
        ``message`` among them), see ``transition``."""
        through = None
        if via is not None:
            via_fields = dict(via[1])
            through = (via[0], via_fields, via_fields.pop("message", None))
        unknown = set(fields).union(through[1] if through else ()) - MOVE_FIELDS
        if unknown:
            raise ValueError(f"cannot set {sorted(unknown)} on a run")
        with self.db.write():
            return transition(
                self.db, run_id, sources, to, by=agent_id, holder=agent_id, message=message,
                fields=fields, via=through,
            )  # fmt: skip

    def update(self, run_id: str, **fields: Any) -> None:
        """Set non-state fields (pid, paths) on a run; state changes go through ``move``."""
        unknown = set(fields) - MOVE_FIELDS
        if unknown:
            raise ValueError(f"cannot set {sorted(unknown)} on a run")
        fields["updated_at"] = time.time()
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.db.write():
            self.db.execute(f"UPDATE runs SET {sets} WHERE id = ?", [*fields.values(), run_id])

    def note(self, run_id: str, message: str) -> None:
        """An event that changes no state: a warning or a fact worth keeping on the run."""
        now = time.time()
        with self.db.write():
            row = self.db.one("SELECT state FROM runs WHERE id = ?", [run_id])
            if row is None:
                raise NotFound(f"run '{run_id}' does not exist")
            self._event(run_id, row["state"], row["state"], None, message, now)

    # -- leases and takeovers ------------------------------------------------------------
    def expired(self, host: str, *, queue_ids: Iterable[int] = ()) -> list[Row]:
        """Held runs whose lease ran out, started by an agent on ``host``.

        Only runs of ``queue_ids``, or direct launches, which any agent on the host may adopt.
        """
        ids = list(queue_ids)
        in_queues = f"r.queue_id IN ({', '.join('?' for _ in ids)}) OR " if ids else ""
        rows = self.db.all(
            "SELECT r.* FROM runs r JOIN agents a ON a.id = r.agent_id"
            f" WHERE r.state IN {HELD} AND r.lease_expires_at < ? AND a.host = ?"
            f" AND ({in_queues}r.queue_id IS NULL) ORDER BY r.seq",
            [time.time(), host, *ids],
        )
        return [r for r in (_decode(row) for row in rows) if r is not None]

    def take_over(self, run_id: str, agent_id: str, lease_s: float) -> Row | None:
        """Take over a held run whose lease has expired; recorded as an event. None if not."""
        now = time.time()
        with self.db.write():
            old = self.db.one(
                f"SELECT agent_id, state FROM runs WHERE id = ? AND state IN {HELD}"
                " AND lease_expires_at < ?",
                [run_id, now],
            )
            if old is None:
                return None
            self.db.execute(
                "UPDATE runs SET agent_id = ?, lease_expires_at = ?, updated_at = ? WHERE id = ?",
                [agent_id, now + lease_s, now, run_id],
            )
            why = f"taken over from agent {old['agent_id']}: its lease expired"
            self._event(run_id, old["state"], old["state"], agent_id, why, now,
                        kind=EventKind.TAKEOVER)  # fmt: skip
        return self.get(run_id)

    def expire_leases_of(self, agent_id: str, why: str) -> int:
        """End the leases of a dead agent's runs now, so they can be taken over at once."""
        now = time.time()
        with self.db.write():
            rows = self.db.all(
                f"SELECT id, state FROM runs WHERE agent_id = ? AND state IN {HELD}", [agent_id]
            )
            for row in rows:
                self.db.execute(
                    "UPDATE runs SET lease_expires_at = ? WHERE id = ?", [now - 0.001, row["id"]]
                )
                self._event(row["id"], row["state"], row["state"], agent_id,
                            f"lease of agent {agent_id} expired: {why}", now)  # fmt: skip
            self.db.execute(
                "UPDATE agents SET stopped_at = ? WHERE id = ? AND stopped_at IS NULL",
                [now, agent_id],
            )
        return len(rows)

    def request_cancel(self, run_id: str, by: str | None = None) -> str:
        """Cancel: a queued run stops at once; an active one is flagged for its agent.

        ``by`` (the user who asked) goes into the event's message: "cancelled by USER".
        Returns the state the run is in afterwards.
        """
        now = time.time()
        who = f"cancelled by {by}" if by else "cancelled"
        with self.db.write():
            row = self.db.one("SELECT state FROM runs WHERE id = ?", [run_id])
            if row is None:
                raise NotFound(f"run '{run_id}' does not exist")
            state = row["state"]
            if state == State.QUEUED:
                transition(
                    self.db, run_id, [State.QUEUED], State.STOPPED, message=who, at=now,
                    fields={"reason": "cancelled"},
                )  # fmt: skip
                return str(State.STOPPED)
            if state in ACTIVE:
                self.db.execute(
                    "UPDATE runs SET cancel_requested = 1, updated_at = ? WHERE id = ?",
                    [now, run_id],
                )
                # A note (no state change): its agent records the stop when the run ends.
                self._event(run_id, state, state, None, f"{who}; its agent stops it", now)
                return str(state)
            raise StateConflict(f"run {run_id} is already {state}")

    # -- edits and bulk reruns (issue 18) ------------------------------------------------
    def edit_queued(
        self,
        run_id: str,
        *,
        expect: Row,
        spec: dict[str, Any],
        priority: int,
        message: str,
    ) -> None:
        """Replace a queued run's spec and priority, recording ``message`` as a note, in one
        transaction. The run must still be queued and hold the spec and priority of
        ``expect`` (what the caller read and checked), else ``StateConflict`` and nothing
        is written: an agent that claims it at the same moment gets the old spec or the
        new one, never a mix, and two edits never undo each other unseen."""
        now = time.time()
        with self.db.write():
            row = self.db.one("SELECT state, spec, priority FROM runs WHERE id = ?", [run_id])
            if row is None:
                raise NotFound(f"run '{run_id}' does not exist")
            if row["state"] != State.QUEUED:
                raise StateConflict(
                    f"run {run_id} is {row['state']}: only a queued run can be edited"
                )
            if (loads(row["spec"]) or {}) != expect["spec"] or row["priority"] != expect[
                "priority"
            ]:
                raise StateConflict(f"run {run_id} was changed while it was edited; try again")
            cur = self.db.execute(
                f"UPDATE runs SET spec = ?, priority = ?, updated_at = ?"
                f" WHERE id = ? AND state IN {WAITING}",
                [dumps(spec), priority, now, run_id],
            )
            if cur.rowcount != 1:  # cannot happen inside the write lock; checked all the same
                raise StateConflict(f"run {run_id} is no longer queued: it was not edited")
            self._event(run_id, State.QUEUED, State.QUEUED, None, message, now)

    def reruns_of(self, run_ids: Iterable[str]) -> dict[str, str]:
        """For each of ``run_ids`` that has been rerun, the id of its newest rerun."""
        ids = list(run_ids)
        out: dict[str, str] = {}
        for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
            chunk = ids[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            for row in self.db.all(
                f"SELECT id, rerun_of FROM runs WHERE rerun_of IN ({marks}) ORDER BY seq", chunk
            ):
                out[row["rerun_of"]] = row["id"]
        return out

    def insert_first_rerun(self, run: dict[str, Any]) -> Row | None:
        """Store ``run`` (a rerun: ``rerun_of`` set) unless its original already has a
        rerun, checked in the same transaction: two bulk reruns at once never rerun one
        run twice. None when it had one."""
        now = time.time()
        with self.db.write():
            if self.db.one("SELECT 1 FROM runs WHERE rerun_of = ?", [run["rerun_of"]]):
                return None
            insert_queued(self.db, run, now)
        return self.get(run["id"])

    def _event(
        self,
        run_id: str,
        from_state: str | None,
        to_state: str,
        agent_id: str | None,
        message: str | None,
        at: float,
        *,
        kind: EventKind | None = None,
    ) -> None:
        insert_event(self.db, run_id, from_state, to_state, agent_id, message, at, kind=kind)


def transition(
    db: Database,
    run_id: str,
    sources: Iterable[str],
    to: str,
    *,
    by: str | None = None,
    holder: str | None = None,
    message: str | None = None,
    at: float | None = None,
    fields: dict[str, Any] | None = None,
    returning: list[Row] | None = None,
    via: tuple[str, dict[str, Any], str | None] | None = None,
) -> str:
    """The one way a run's state changes. Call it inside ``db.write()``.

    Checks the move against ``launchctl.states.ALLOWED`` (a ``ValueError`` if it is not
    listed), then one guarded UPDATE (``WHERE state IN (sources)``, and with ``holder``:
    held by that agent or by nobody) whose row count is checked (``StateConflict`` if
    the guard failed), and the event row, from the old state to ``to``, with ``by`` as its
    agent and ``message`` (else the ``reason`` field) as its text. Moving out of the held
    states frees the run's GPUs (the trigger). Returns the state the run left.

    ``returning`` (a list, for a move with one state to leave): the run's row as the move
    left it is appended, raw (``_decode`` it), read by the UPDATE itself (issue 17: no
    read after a claim).

    ``via`` (a state, its fields and its event's message): two moves in one UPDATE,
    through that state to ``to``, each checked and with its event (issue 17: a trivial
    run's end is seen before its start was recorded, and both are recorded in one commit).
    """
    if via is not None:
        check_move(sources, via[0])
        check_move([via[0]], to)
        fields = {**via[1], **(fields or {})}
    else:
        check_move(sources, to)
        fields = dict(fields or {})
    if not db.conn.in_transaction:
        raise RuntimeError("a state change must be made inside db.write()")
    asked = tuple(fields)
    if asked not in _KNOWN_FIELDS:  # checked once per set of fields
        unknown = set(asked) - _STATE_FIELDS
        if unknown:
            raise ValueError(f"cannot set {sorted(unknown)} on a run")
        if len(_KNOWN_FIELDS) >= 256:
            _KNOWN_FIELDS.clear()
        _KNOWN_FIELDS.add(asked)
    froms = [s.value for s in ordered(sources)]
    now = time.time() if at is None else at
    fields["updated_at"] = now
    if to in TERMINAL:
        fields.setdefault("ended_at", now)
    if to == State.QUEUED:
        # Back in the queue (requeue, retry, release): at its end, and held by nobody.
        fields.setdefault("enqueued_at", now)
        # Its runtime starts again with its next start: a waiting run's does not grow.
        fields.update(
            lease_expires_at=None, pid=None, pid_started=None, agent_id=None, started_at=None
        )
    params: list[Any] = [str(to), *fields.values()]
    clears_wait = to == State.CLAIMED and "reason" not in fields
    if clears_wait:
        params.append(WAIT_PREFIX + "%")
    params += [run_id, *froms]
    if holder is not None:
        params.append(holder)
    update = _update_text(tuple(fields), len(froms), clears_wait, holder is not None)
    if returning is not None and len(froms) != 1:
        raise ValueError("returning is for a move with one state to leave")
    if len(froms) == 1:
        # One state to leave (most moves): the run left it if the guarded update took, so
        # no read first (issue 17: a read less per move); the read only says why it did not.
        if returning is not None:
            rows = db.execute(update + " RETURNING *", params).fetchall()
            if len(rows) != 1:
                _refuse(db, run_id, to)
            returning.append(dict(rows[0]))
        elif db.execute(update, params).rowcount != 1:
            _refuse(db, run_id, to)
        old = froms[0]
    else:
        current = db.one("SELECT state FROM runs WHERE id = ?", [run_id])
        if current is None:
            raise NotFound(f"run '{run_id}' does not exist")
        if db.execute(update, params).rowcount != 1:
            raise StateConflict(f"run {run_id} is {current['state']}; it cannot become {to}")
        old = current["state"]
    detail = message
    if detail is None and fields.get("reason"):
        detail = str(fields["reason"])
    if via is not None:
        insert_event(db, run_id, old, str(via[0]), by, via[2], now)
        old_for_event = str(via[0])
    else:
        old_for_event = str(old)
    insert_event(db, run_id, old_for_event, str(to), by, detail, now)
    return str(old)


def _update_text(keys: tuple[str, ...], froms: int, clears_wait: bool, held: bool) -> str:
    """The guarded UPDATE of a move setting ``keys``, made once per shape (issue 17: the
    agent makes the same few moves for every run)."""
    shape = (keys, froms, clears_wait, held)
    text = _UPDATES.get(shape)
    if text is None:
        sets = ", ".join(f"{k} = ?" for k in keys)
        if clears_wait:  # an agent's "waiting: ..." no longer holds once the run is claimed
            sets += ", reason = CASE WHEN reason LIKE ? THEN NULL ELSE reason END"
        guard = f"state IN ({', '.join('?' for _ in range(froms))})"
        if held:
            guard += " AND (agent_id = ? OR agent_id IS NULL)"
        text = f"UPDATE runs SET state = ?, {sets} WHERE id = ? AND {guard}"
        if len(_UPDATES) >= 256:
            _UPDATES.clear()
        _UPDATES[shape] = text
    return text


_UPDATES: dict[tuple[tuple[str, ...], int, bool, bool], str] = {}
_KNOWN_FIELDS: set[tuple[str, ...]] = set()  # sets of fields a move may set, as checked


def _refuse(db: Database, run_id: str, to: str) -> NoReturn:
    """Why a guarded move did not take: the run does not exist, or is in another state
    (or held by another agent)."""
    current = db.one("SELECT state FROM runs WHERE id = ?", [run_id])
    if current is None:
        raise NotFound(f"run '{run_id}' does not exist")
    raise StateConflict(f"run {run_id} is {current['state']}; it cannot become {to}")


def insert_queued(
    db: Database,
    run: dict[str, Any],
    at: float,
    *,
    after: Iterable[tuple[str, str]] = (),
    agent_id: str | None = None,
    message: str = "launched",
) -> None:
    """Write one new ``queued`` run: its row (its spec encoded, its launcher as ``author``
    for the claim's per-user count), its first event, and a ``run_deps`` row for each run
    it waits for. Every way a run is made (a launch, a rerun, an array, a sweep's trial)
    writes it through this, in the caller's transaction."""
    after = list(after)
    row = dict(
        run, state=State.QUEUED, created_at=at, updated_at=at, enqueued_at=at,
        spec=dumps(run["spec"]), deps=len(after), author=run["spec"].get("author"),
    )  # fmt: skip
    cols = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    db.execute(f"INSERT INTO runs ({cols}) VALUES ({marks})", list(row.values()))
    insert_event(db, run["id"], None, State.QUEUED, agent_id, message, at)
    for dep_id, kind in after:
        db.execute(
            "INSERT INTO run_deps (run_id, dep_id, kind) VALUES (?, ?, ?)",
            [run["id"], dep_id, kind],
        )


def insert_event(
    db: Database,
    run_id: str,
    from_state: str | None,
    to_state: str,
    agent_id: str | None,
    message: str | None,
    at: float,
    *,
    kind: EventKind | None = None,
) -> None:
    """One event row; callers write it in the transaction of the change it records. A
    state change writes it through ``transition``; a note (same state) directly."""
    db.execute(
        "INSERT INTO events (run_id, at, from_state, to_state, agent_id, message, kind)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [run_id, at, from_state, to_state, agent_id, message, kind],
    )


def select_runs(
    db: Database,
    *,
    queue: str | None = None,
    states: Iterable[str] = (),
    project: str | None = None,
    job_id: int | None = None,
    version_id: int | None = None,
    since: float | None = None,
    before: float | None = None,
    limit: int | None = 50,
) -> list[Row]:
    """Runs, newest first, filtered; ``since``/``before`` compare the creation time."""
    where: list[str] = []
    params: list[Any] = []
    if queue is not None:
        where.append("queue_name = ?")
        params.append(queue)
    states = list(states)
    if states:
        where.append(f"state IN ({', '.join('?' for _ in states)})")
        params.extend(states)
    if project is not None:
        where.append("project = ?")
        params.append(project)
    if version_id is not None:
        where.append("job_version_id = ?")
        params.append(version_id)
    if job_id is not None:
        where.append("job_version_id IN (SELECT id FROM job_versions WHERE job_id = ?)")
        params.append(job_id)
    if since is not None:
        where.append("created_at >= ?")
        params.append(since)
    if before is not None:
        where.append("COALESCE(ended_at, created_at) < ?")
        params.append(before)
    sql = "SELECT * FROM runs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY seq DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [r for r in (_decode(row) for row in db.all(sql, params)) if r is not None]
