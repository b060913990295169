"""Runners, one module per resource type, chosen from a registry by the queue's resource."""

from __future__ import annotations

from launchctl.errors import LaunchctlError
from launchctl.runners.base import CacheMount, Exit, Handle, Launch, Runner, RunnerError


def available() -> tuple[str, ...]:
    """Resource types this version of launchctl can run."""
    return ("local-process", "local-container")


def get(resource: str) -> Runner:
    if resource == "local-process":
        from launchctl.runners.local_process import LocalProcessRunner

        return LocalProcessRunner()
    if resource == "local-container":
        from launchctl.runners.local_container import LocalContainerRunner

        return LocalContainerRunner()
    raise LaunchctlError(
        f"this version of launchctl has no runner for {resource!r} yet"
        f" (it can run: {', '.join(available())})"
    )


__all__ = ["CacheMount", "Exit", "Handle", "Launch", "Runner", "RunnerError", "available", "get"]
