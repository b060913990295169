"""What the agent command starts before it loads the rest of the agent (issue 17)."""

from __future__ import annotations


def start_spawner() -> None:
    """The agent's spawner, started now: its interpreter takes about 25 ms to start, and
    the first runs waited for it; started before the agent's own modules load, it is up by
    the first claim. Where no spawner can run (no pidfds), nothing happens."""
    from launchctl.runners import spawned

    spawned.start_early()
