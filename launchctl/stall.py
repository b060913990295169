"""Stuck runs (issue 18): a queue's ``stall_after`` and ``on_stall``, as an admin writes them.

``stall_after: 30m`` (or a number of seconds) marks a running run that wrote no output
for that long (and, for a GPU run where NVML is present, kept its GPUs' use under a
threshold over the same time) as stalled; ``on_stall: stop`` also stops it, and it ends
``failed`` with the reason ``stalled``. The agent's watch is ``launchctl.agent.stall``.

"Output" is a write to the run's log (``runs/RUN_ID/output.log``: what a local process
prints, what the agent copies from a container or a Slurm job) or to the transaction log
of a W&B run it made itself (``wandb/run-*/run-*.wandb`` in its working copy or its
``wandb-dir``: a run that logs metrics without printing is not silent). A GPU run is not
stalled while any of its GPUs computes at ``GPU_BUSY_PERCENT`` or more (NVML's
utilization, sampled about ten times per ``stall_after``, at least once a minute and at
most once a second); with no NVML it is judged by its output alone.

A stalled run gets ``runs.stalled_at`` (the time of its last output), a note
(``stalled: no output for 30m0s``), a line in the agent's output and its hooks that name
``stalled`` in ``on:`` (``launchctl.hooks``); writing again clears the mark, with a note
(``output again after ...``). A run stopped for it is not retried by its queue's
``retry`` policy (``retry.on`` knows ``failed`` and ``timeout``).
"""

from __future__ import annotations

from typing import Any

from launchctl.errors import ConfigError, UsageError

ON_STALL = ("report", "stop")
MIN_STALL_S = 1.0
MAX_STALL_S = 366 * 86400.0
STALLED = "stalled"  # the reason a run stopped for it ends with (``on_stall: stop``)
GPU_BUSY_PERCENT = 5  # a GPU computing at least this much of the time is not idle


def said(seconds: float) -> str:
    """A duration as the stall notes say it: ``45s``, ``30m0s``, ``2h5m0s``, ``3d4h0m0s``."""
    total = max(0, round(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h{minutes}m{secs}s"
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def settings(config: Any) -> tuple[float, bool] | None:
    """A queue config's ``(stall_after seconds, stop)``; None when it has no ``stall_after``
    (or one that no longer checks: a config is checked when written)."""
    if not isinstance(config, dict) or config.get("stall_after") is None:
        return None
    try:
        seconds = stall_seconds(config["stall_after"])
    except ConfigError:
        return None
    return seconds, config.get("on_stall") == "stop"


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
