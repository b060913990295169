"""Resource guardrails: what a run asks for (CPUs, memory, GPUs, run time) and queue ceilings.

A run's asks come from its resource args (the queue's, then its own). A queue's
``ceilings`` cap them: an ask above a ceiling is refused, and a ceiling with no ask
becomes the run's limit, so no run of the queue can exceed it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from launchctl.errors import ConfigError, LaunchctlError

LIMIT_KEYS = ("cpus", "memory", "gpus", "max_run_time")
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DURATION = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _parse_memory(value: Any, what: str = "memory") -> int:
    """``512m``, ``4g``, ``4GiB`` or a number of bytes -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)(?:i?b)?\s*", str(value).lower())
    if not match:
        raise ConfigError(f"{what} must be a size like 512m or 4g, got {value!r}")
    size = int(float(match.group(1)) * _UNITS[match.group(2)])
    if size <= 0:
        raise ConfigError(f"{what} must be more than 0, got {value!r}")
    return size


def _parse_duration(value: Any, what: str = "max_run_time") -> float:
    """Seconds, or ``90s``, ``30m``, ``2h``, ``1d`` -> seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(value).lower())
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"{what} must be a duration like 3600, 90s, 30m or 2h, got {value!r}")
    return float(match.group(1)) * _DURATION[match.group(2)]


def _parse_cpus(value: Any) -> float:
    try:
        cpus = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"cpus must be a number, got {value!r}") from None
    if not cpus > 0:
        raise ConfigError(f"cpus must be more than 0, got {value!r}")
    return cpus


def gpu_count(value: Any) -> int | None:
    """A GPU ask as a count: a number, ``device=0,1`` (2), or ``all`` (None: every GPU)."""
    text = str(value).strip().strip('"')
    if text == "all":
        return None
    if text.startswith("device="):
        return len([d for d in text.removeprefix("device=").split(",") if d.strip()])
    if text.isdigit():
        return int(text)
    raise ConfigError(f"gpus must be all, a count or device=ID,...; got {value!r}")


@dataclass
class Limits:
    """What a run may use; None where nothing limits it."""

    cpus: float | None = None
    memory: int | None = None  # bytes
    gpus: Any = None  # as asked: a count, "all" or "device=..."
    max_run_time: float | None = None  # seconds

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def asks(resource_args: dict[str, Any]) -> Limits:
    """The limits a run's merged resource args ask for."""
    limits = Limits()
    if resource_args.get("cpus") is not None:
        limits.cpus = parse_cpus(resource_args["cpus"])
    if resource_args.get("memory") is not None:
        limits.memory = parse_memory(resource_args["memory"])
    if resource_args.get("gpus") is not None:
        gpu_count(resource_args["gpus"])
        limits.gpus = resource_args["gpus"]
    if resource_args.get("max_run_time") is not None:
        limits.max_run_time = parse_duration(resource_args["max_run_time"])
    return limits


def check_ceilings_config(ceilings: Any) -> None:
    """Validate a queue's ``ceilings`` when the config is written."""
    if not isinstance(ceilings, dict):
        raise ConfigError("queue config: ceilings must be an object")
    for key in ceilings:
        if key not in LIMIT_KEYS:
            raise ConfigError(
                f"queue config: ceilings has unknown key {key!r} (allowed: {', '.join(LIMIT_KEYS)})"
            )
    asks(dict(ceilings))
    if "gpus" in ceilings and gpu_count(ceilings["gpus"]) is None:
        raise ConfigError("queue config: a gpus ceiling must be a count, not all")


def apply_ceilings(queue: str, ceilings: dict[str, Any], limits: Limits) -> Limits:
    """Refuse an ask above a ceiling; fill a missing ask with the ceiling."""
    if not ceilings:
        return limits
    cap = asks(dict(ceilings))

    def over(what: str, asked: Any, ceiling: Any) -> LaunchctlError:
        return LaunchctlError(
            f"the run asks for {what} {asked}, above queue {queue}'s ceiling of {ceiling}"
        )

    out = Limits(**asdict(limits))
    if cap.cpus is not None:
        if limits.cpus is not None and limits.cpus > cap.cpus:
            raise over("cpus", f"{limits.cpus:g}", f"{cap.cpus:g}")
        out.cpus = limits.cpus if limits.cpus is not None else cap.cpus
    if cap.memory is not None:
        if limits.memory is not None and limits.memory > cap.memory:
            raise over("memory", _size_text(limits.memory), ceilings["memory"])
        out.memory = limits.memory if limits.memory is not None else cap.memory
    if cap.max_run_time is not None:
        if limits.max_run_time is not None and limits.max_run_time > cap.max_run_time:
            raise over("max_run_time", f"{limits.max_run_time:g}s", f"{cap.max_run_time:g}s")
        out.max_run_time = (
            limits.max_run_time if limits.max_run_time is not None else (cap.max_run_time)
        )
    if cap.gpus is not None:
        ceiling = gpu_count(cap.gpus)
        asked = gpu_count(limits.gpus) if limits.gpus is not None else 0
        if asked is None or (ceiling is not None and asked > ceiling):
            raise over("gpus", limits.gpus, ceiling)
    return out


def _size_text(size: int) -> str:
    for unit in ("t", "g", "m", "k"):
        if size >= _UNITS[unit] and size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return f"{size} bytes"


def _guarded(parse: Any, what: str) -> Any:
    """A parser that turns absurd numbers (too large for a float) into a clear refusal."""

    def run(value: Any, *args: Any) -> Any:
        try:
            return parse(value, *args)
        except (OverflowError, ValueError, TypeError):
            raise ConfigError(f"{what} is not a usable number: {str(value)[:40]!r}") from None

    return run


parse_memory = _guarded(_parse_memory, "memory")
parse_duration = _guarded(_parse_duration, "max_run_time")
parse_cpus = _guarded(_parse_cpus, "cpus")
