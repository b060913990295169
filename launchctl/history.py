"""A run's attempts, derived from its events: each claim starts one, its end closes it."""

from __future__ import annotations

from typing import Any

from launchctl.states import ATTEMPT_ENDS, EventKind, State


def attempts(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per attempt: number, agent, claimed/started/ended times, outcome, message."""
    out: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for ev in events:
        to, frm = ev["to_state"], ev["from_state"]
        if to == State.CLAIMED:
            current = {
                "attempt": len(out) + 1, "agent": ev["agent_id"], "claimed_at": ev["at"],
                "started_at": None, "ended_at": None, "outcome": None, "message": None,
            }  # fmt: skip
            out.append(current)
        elif current is None:
            continue
        elif to == State.RUNNING and frm != to:
            current["started_at"] = ev["at"]
        elif ev.get("kind") == EventKind.TAKEOVER:
            current["agent"] = ev["agent_id"]
        elif to in ATTEMPT_ENDS and frm != to and current["outcome"] is None:
            current["ended_at"] = ev["at"]
            current["outcome"] = to
            current["message"] = ev["message"]
            current = None
    return out
