"""Stuck runs (issue 18): a queue's ``stall_after`` and ``on_stall``, as an admin writes them.

``stall_after: 30m`` (or a number of seconds) marks a running run that wrote no output
for that long (and, for a GPU run where NVML is present, kept its GPUs' use under a
threshold over the same time) as stalled; ``on_stall: stop`` also stops it, and it ends
``failed`` with the reason ``stalled``. The agent's watch is ``launchctl.agent.stall``.
"""

from __future__ import annotations

from typing import Any

from launchctl.errors import ConfigError, UsageError

ON_STALL = ("report", "stop")
MIN_STALL_S = 1.0
MAX_STALL_S = 366 * 86400.0


def stall_seconds(value: Any, *, where: str = "queue config") -> float:
    """``stall_after`` in seconds: a number, or a duration as ``launch --delay`` reads it."""
    from launchctl.workflow import parse_delay

    if isinstance(value, bool):
        seconds = -1.0
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = parse_delay(value)
        except UsageError:
            seconds = -1.0
    else:
        seconds = -1.0
    if not MIN_STALL_S <= seconds <= MAX_STALL_S:
        raise ConfigError(
            f"{where}: stall_after must be a duration from 1s to 366d (30m, 2h, or seconds),"
            f" got {value!r}"
        )
    return seconds


def check_stall(config: dict[str, Any], *, where: str = "queue config") -> None:
    """Refuse a bad ``stall_after``/``on_stall`` pair; ``on_stall`` needs ``stall_after``."""
    if "stall_after" in config:
        stall_seconds(config["stall_after"], where=where)
    if "on_stall" in config:
        if config["on_stall"] not in ON_STALL:
            raise ConfigError(
                f"{where}: on_stall must be one of {', '.join(ON_STALL)},"
                f" got {config['on_stall']!r}"
            )
        if "stall_after" not in config:
            raise ConfigError(f"{where}: on_stall needs stall_after (how long a run is silent)")
