"""The one exception root for errors a user caused, and its few kinds.

The CLI turns any ``LaunchctlError`` into one line on stderr and exit 1. The
agent records one that ends a run as the run's failure, at the stage a ``RunnerError``
names (any other kind fails it at stage ``agent``).
"""

from __future__ import annotations

from typing import Literal

# Where a run failed: the agent's checks and preparation, the image build, or the runner.
Stage = Literal["agent", "build", "run"]


class LaunchctlError(Exception):
    """An error the user can act on; its message is shown as it is.

    Every kind exits 1: launchctl parsed the command line and refused what it asked.
    Exit 2 is kept for what Click refuses before launchctl runs (an unknown option, a
    missing argument); see launchctl/cli/__init__.py (issue 12, item 12)."""

    exit_code = 1


class UsageError(LaunchctlError):
    """Flags or arguments that do not fit together, or a value in the wrong form
    (exit 1, like every refusal launchctl itself makes)."""


class NotFound(LaunchctlError):
    """A named queue, job, run or agent that does not exist."""


class ConfigError(LaunchctlError):
    """A config file or string that cannot be read or does not validate."""


class StateConflict(LaunchctlError):
    """A state change that lost a race or is not allowed from the current state."""


class StoreBusy(LaunchctlError):
    """The database stayed locked by another writer past the busy timeout."""


class RunnerError(LaunchctlError):
    """A run could not be prepared, built, started or followed: the agent marks it failed
    at ``stage`` with this message, and carries on."""

    def __init__(self, message: str, *, stage: Stage = "run") -> None:
        super().__init__(message)
        self.stage: Stage = stage


def stage_of(exc: LaunchctlError) -> Stage:
    """The stage a run that ``exc`` ended failed at: a RunnerError's own, else ``agent``
    (a rule the agent enforces, a secret it could not read...)."""
    return exc.stage if isinstance(exc, RunnerError) else "agent"
