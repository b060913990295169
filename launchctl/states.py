"""The run state machine: the states, which moves are allowed, and the one way to make them.

Every move is one guarded UPDATE (``WHERE state IN (...)``) whose row count is checked,
together with an event row, in one transaction (see ``store.runs.RunTable.move``).
"""

from __future__ import annotations

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


TERMINAL = frozenset({State.FINISHED, State.FAILED, State.STOPPED})
# Held by an agent: the run has a lease and an agent is responsible for it.
ACTIVE = frozenset({State.CLAIMED, State.BUILDING, State.STARTING, State.RUNNING})

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


def sources_of(target: State) -> frozenset[State]:
    """Every state from which ``target`` may be reached."""
    return frozenset(s for s, nexts in ALLOWED.items() if target in nexts)


def move(
    store: Store,
    run_id: str,
    to: State,
    *,
    agent_id: str | None = None,
    message: str | None = None,
    expect: frozenset[State] | None = None,
    **fields: Any,
) -> State:
    """Move a run to ``to`` if it is in one of ``expect`` (default: any allowed source).

    Returns the state it left. Raises ``StateConflict`` when the guard fails, for
    example because another agent or a cancel got there first.
    """
    sources = expect if expect is not None else sources_of(to)
    illegal = {s for s in sources if to not in ALLOWED[s]}
    if illegal:
        raise ValueError(f"{sorted(illegal)} -> {to} is not a legal move")
    old = store.runs.move(run_id, sources, to, agent_id=agent_id, message=message, **fields)
    return State(old)


def is_terminal(state: str) -> bool:
    return state in TERMINAL


__all__ = [
    "ACTIVE",
    "ALLOWED",
    "STAGES",
    "TERMINAL",
    "State",
    "StateConflict",
    "is_terminal",
    "move",
    "sources_of",
]
