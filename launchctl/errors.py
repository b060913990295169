"""The one exception root for errors a user caused, and its few kinds.

The CLI turns any ``LaunchctlError`` into one line on stderr and a non-zero exit.
"""

from __future__ import annotations


class LaunchctlError(Exception):
    """An error the user can act on; its message is shown as it is."""

    exit_code = 1


class UsageError(LaunchctlError):
    """Flags or arguments that do not fit together (exit 2, like a usage error)."""

    exit_code = 2


class NotFound(LaunchctlError):
    """A named queue, job, run or agent that does not exist."""


class ConfigError(LaunchctlError):
    """A config file or string that cannot be read or does not validate."""


class StateConflict(LaunchctlError):
    """A state change that lost a race or is not allowed from the current state."""


class StoreBusy(LaunchctlError):
    """The database stayed locked by another writer past the busy timeout."""
