"""The agent's watch for stuck runs (issue 18): see ``launchctl.stall`` for the queue keys.

``StallWatch.check`` runs once per agent pass over the runs the agent follows;
``next_check`` says when the loop must wake for it at the latest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from launchctl.store import Store


class StallWatch:
    """Finds running runs that are silent for their queue's ``stall_after``."""

    def __init__(self, store: Store, say: Callable[[str], None]) -> None:
        self.store = store
        self.say = say

    def check(self, active: Mapping[str, Any], stop: Callable[[Any, str], None]) -> None:
        """Look at each followed run (``launchctl.agent.loop.Active``: its ``run_id``,
        ``handle``, ``run`` row as claimed); ``stop(active, reason)`` stops one
        (``on_stall: stop``)."""
        return None

    def next_check(self) -> float | None:
        """``time.monotonic()`` by which the loop must pass again, or None."""
        return None
