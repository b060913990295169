"""The agent: the loop that claims, starts, watches and finishes runs."""

from launchctl.agent.config import AgentOptions
from launchctl.agent.loop import Agent

__all__ = ["Agent", "AgentOptions"]
