"""Run states: their names, the named sets, which moves are allowed, and the one way to
make a move.

This module is the state vocabulary the whole package shares, the store included: it
imports nothing from the store at run time, so ``launchctl.store`` may import it without
a cycle. Every SQL string that names states, and the trigger that frees a run's GPUs, is
built from the sets below; change a set here and nowhere else (a changed ``ACTIVE`` also
needs a migration that re-creates the trigger: ``tests/test_states.py`` says so).

A move is made by ``move`` (the core's verb), which calls the store's one guarded update
(``store.runs.transition``): it checks the move against ``ALLOWED``, changes the state
with ``UPDATE ... WHERE state IN (...)``, checks the row count and writes the event row,
all in one transaction. Claims, cancels, GPU claims and queue deletion go through the
same update.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from launchctl.errors import StateConflict

if TYPE_CHECKING:
    from launchctl.store import Store


class State(StrEnum):
    QUEUED = "queued"
    CLAIMED = "claimed"
    BUILDING = "building"
    STARTING = "starting"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"
    PREEMPTED = "preempted"


# Held by an agent: the run has a lease, an agent is responsible for it, and it holds
# its GPUs (a move out of this set frees them, in the same transaction).
ACTIVE = frozenset({State.CLAIMED, State.BUILDING, State.STARTING, State.RUNNING})
# Ended for good: no move leaves these.
TERMINAL = frozenset({State.FINISHED, State.FAILED, State.STOPPED})
# A move into one of these ends an attempt (see ``launchctl.history``): every state
# but the held ones. PREEMPTED and QUEUED end an attempt without ending the run.
ATTEMPT_ENDS = frozenset(State) - ACTIVE

# Back to QUEUED from a held state: released before it started (its agent was lost or
# drained), or, from RUNNING, a retry of a failed attempt.
ALLOWED: dict[State, frozenset[State]] = {
    State.QUEUED: frozenset({State.CLAIMED, State.STOPPED}),
    State.CLAIMED: frozenset(
        {State.BUILDING, State.STARTING, State.FAILED, State.STOPPED, State.QUEUED}
    ),
    State.BUILDING: frozenset({State.STARTING, State.FAILED, State.STOPPED, State.QUEUED}),
    State.STARTING: frozenset({State.RUNNING, State.FAILED, State.STOPPED, State.QUEUED}),
    State.RUNNING: frozenset(
        {State.FINISHED, State.FAILED, State.STOPPED, State.PREEMPTED, State.QUEUED}
    ),
    State.PREEMPTED: frozenset({State.QUEUED, State.FAILED, State.STOPPED}),
    State.FINISHED: frozenset(),
    State.FAILED: frozenset(),
    State.STOPPED: frozenset(),
}

# Where a failure happened, shown with the reason in `runs show`.
STAGES = ("agent", "build", "run")


class EventKind(StrEnum):
    """What an event that is not a plain move or note records (the ``events.kind`` column;
    NULL for a move or a note). Readers test the kind, never the message's text."""

    # Another agent took over a held run whose lease had expired (a note: no state change).
    TAKEOVER = "takeover"


def ordered(states: Iterable[str]) -> list[State]:
    """``states`` in the order the states are declared, each checked to be a state: a
    stable order for the SQL built from a set."""
    return list(_ordered(frozenset(states)))


@functools.lru_cache(maxsize=256)
def _ordered(states: frozenset[str]) -> tuple[State, ...]:
    # Issue 17: every move orders its sources twice; the few sets used are worked out once.
    wanted = {State(s) for s in states}
    return tuple(s for s in State if s in wanted)


def sources_of(target: State) -> frozenset[State]:
    """Every state from which ``target`` may be reached."""
    return frozenset(s for s, nexts in ALLOWED.items() if target in nexts)


def check_move(sources: Iterable[str], to: str) -> None:
    """Refuse a move that ``ALLOWED`` does not list from every one of ``sources``.

    A programming error, not a user's: a ``ValueError``. The store calls this on every
    state change before its guarded update.
    """
    target = State(to)
    froms = ordered(sources)
    if not froms:
        raise ValueError(f"a move to {target} needs at least one state to leave")
    illegal = [s for s in froms if target not in ALLOWED[s]]
    if illegal:
        raise ValueError(f"{[str(s) for s in illegal]} -> {target} is not a legal move")


def move(
    store: Store,
    run_id: str,
    to: State,
    *,
    agent_id: str | None = None,
    message: str | None = None,
    expect: frozenset[State] | None = None,
    via: tuple[State, dict[str, Any]] | None = None,
    **fields: Any,
) -> State:
    """Move a run to ``to`` if it is in one of ``expect`` (default: any allowed source).

    Returns the state it left. Raises ``StateConflict`` when the guard fails, for
    example because another agent or a cancel got there first, and ``ValueError`` for
    a move ``ALLOWED`` does not list. ``via``: through that state first, its fields set,
    in the same update (two events; ``launchctl.store.runs.transition``).
    """
    sources = expect if expect is not None else sources_of(to)
    old = store.runs.move(
        run_id, sources, to, agent_id=agent_id, message=message,
        via=None if via is None else (str(via[0]), via[1]), **fields,
    )  # fmt: skip
    return State(old)


def is_terminal(state: str) -> bool:
    return state in TERMINAL


__all__ = [
    "ACTIVE",
    "ALLOWED",
    "ATTEMPT_ENDS",
    "STAGES",
    "TERMINAL",
    "EventKind",
    "State",
    "StateConflict",
    "check_move",
    "is_terminal",
    "move",
    "ordered",
    "sources_of",
]
