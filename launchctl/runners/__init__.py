"""Runners, one module per resource type; ``registry`` is the one list of resource types."""

from __future__ import annotations

from launchctl.runners.base import CacheMount, Exit, Handle, Launch, Runner, RunnerError
from launchctl.runners.registry import get

__all__ = ["CacheMount", "Exit", "Handle", "Launch", "Runner", "RunnerError", "get"]
