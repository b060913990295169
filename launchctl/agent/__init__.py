"""The agent: the loop that claims, starts, watches and finishes runs."""

from launchctl.agent.loop import Agent, AgentOptions

__all__ = ["Agent", "AgentOptions"]
