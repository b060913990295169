"""The agent: the loop that claims, starts, watches and finishes runs.

``Agent`` and ``AgentOptions`` load on first use (issue 17): the agent command starts its
spawner (``launchctl.agent.early``) before it loads the loop and the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from launchctl.agent.config import AgentOptions
    from launchctl.agent.loop import Agent

__all__ = ["Agent", "AgentOptions"]


def __getattr__(name: str) -> Any:
    if name == "Agent":
        from launchctl.agent.loop import Agent

        return Agent
    if name == "AgentOptions":
        from launchctl.agent.config import AgentOptions

        return AgentOptions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
