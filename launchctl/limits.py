"""A queue's limits on what one user may hold in flight (issue 18).

``limits: {per_user: 2}`` in a queue config keeps any one launcher from holding more
than that many of the queue's runs in flight (claimed, building, starting, running), so
one labmate's 200 queued runs do not starve another's. The claim enforces it in its own
transaction (``launchctl.store.runs.PER_USER_OK``); this module checks what an admin
writes, and says why a queued run waits for its launcher's slots (``why_waiting``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from launchctl.errors import ConfigError
from launchctl.states import ACTIVE, State

if TYPE_CHECKING:
    from launchctl.store import Store

LIMIT_KEYS = ("per_user",)
MAX_PER_USER = 100_000


def check_limits(limits: Any, *, where: str = "queue config") -> None:
    """Refuse a ``limits`` section that is not ``{per_user: N}`` with N a whole number >= 1."""
    if not isinstance(limits, dict):
        raise ConfigError(f'{where}: limits must be an object, e.g. {{"per_user": 2}}')
    for key in limits:
        if key not in LIMIT_KEYS:
            raise ConfigError(
                f"{where}: unknown key limits.{key} (allowed: {', '.join(LIMIT_KEYS)})"
            )
    if "per_user" in limits:
        value = limits["per_user"]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PER_USER:
            raise ConfigError(
                f"{where}: limits.per_user must be a whole number from 1 to {MAX_PER_USER},"
                f" got {value!r}"
            )


def per_user(config: dict[str, Any] | None) -> int | None:
    """A queue config's ``limits.per_user``, or None when it sets none."""
    limits = (config or {}).get("limits")
    value = limits.get("per_user") if isinstance(limits, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def user_label(author: Any) -> str:
    """Who a run's slot counts against: its launcher (``runs.author``); runs with no
    recorded launcher (stores from before launchers were recorded) count together."""
    return str(author) if author else "runs with no recorded launcher"


def why_waiting(store: Store, run: dict[str, Any]) -> str | None:
    """Why a queued run is held back by its queue's ``limits.per_user``, in one line, e.g.
    ``alice holds 2 of the 2 slots a user may hold in queue lab (limits.per_user)``; None
    when the run is not queued, its queue sets no limit, or its launcher is under it.

    The claim (``launchctl.store.runs.PER_USER_OK``) decides; this says the same thing
    from the same facts (the runs of the same ``author`` in the queue's held states), for
    ``runs show``, ``status`` and the web view. Reads only: the runs one user holds in one
    queue are few.
    """
    if run.get("state") != State.QUEUED or run.get("queue_id") is None:
        return None
    queue = store.queues.by_id(int(run["queue_id"]))
    limit = per_user(queue.get("config") if queue else None)
    if queue is None or limit is None:
        return None
    author = run.get("author")
    held = sum(
        1
        for r in store.runs.select(queue=queue["name"], states=ACTIVE, limit=None)
        if r.get("queue_id") == run["queue_id"] and r.get("author") == author
    )
    if held < limit:
        return None
    return describe(author, held, limit, str(queue["name"]))


def describe(author: Any, held: int, limit: int, queue: str) -> str:
    """One line for a launcher at or over a queue's ``limits.per_user`` (``why_waiting``'s
    words, for anyone who counted ``held`` by other means)."""
    who = user_label(author)
    verb = "hold" if not author else "holds"
    if held > limit:  # the limit was lowered while these ran: they go on, new ones wait
        return (
            f"{who} {verb} {held} slots in queue {queue}, over the {limit} a user may hold"
            " now (limits.per_user was lowered): new runs wait until under it"
        )
    slots = "slot" if limit == 1 else "slots"
    return (
        f"{who} {verb} {held} of the {limit} {slots} a user may hold in queue {queue}"
        " (limits.per_user)"
    )
