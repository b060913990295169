"""The agent's settings: flags over an optional config file (W&B's launch-config keys)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from launchctl.errors import ConfigError, UsageError

AGENT_KEYS = ("queues", "max_jobs", "env", "grace_s", "poll_s", "builder", "registry", "entity")


@dataclass
class AgentSettings:
    queues: list[str]
    max_jobs: int = 1
    env: dict[str, str] = field(default_factory=dict)
    grace_s: float = 10.0
    poll_s: float = 2.0
    extra: dict[str, Any] = field(default_factory=dict)


def load_agent_config(
    config: str | None,
    *,
    queues: list[str],
    max_jobs: int | None,
    grace: float | None,
    poll: float | None,
) -> AgentSettings:
    data: dict[str, Any] = {}
    if config is not None:
        from launchctl.configfile import load_mapping

        data = load_mapping(config, "agent config (-c)")
        unknown = sorted(set(data) - set(AGENT_KEYS))
        if unknown:
            raise ConfigError(
                f"agent config (-c): unknown key {unknown[0]!r} (allowed: {', '.join(AGENT_KEYS)})"
            )
    file_queues = data.get("queues", [])
    if isinstance(file_queues, str):
        file_queues = [file_queues]
    if not isinstance(file_queues, list) or not all(isinstance(q, str) for q in file_queues):
        raise ConfigError("agent config (-c): queues must be a list of queue names")
    all_queues = list(dict.fromkeys([*queue_list(queues), *file_queues]))
    if not all_queues:
        raise UsageError("no queue to serve: pass -q QUEUE (repeatable) or queues in --config")
    jobs = max_jobs if max_jobs is not None else data.get("max_jobs", 1)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or (jobs < 1 and jobs != -1):
        raise UsageError(f"max_jobs must be a positive number or -1 (unlimited), got {jobs!r}")
    env = data.get("env", {})
    if not isinstance(env, dict):
        raise ConfigError("agent config (-c): env must be an object")
    grace_s = _seconds(grace if grace is not None else data.get("grace_s", 10.0), "grace")
    poll_s = _seconds(poll if poll is not None else data.get("poll_s", 2.0), "poll")
    if poll_s <= 0:
        raise UsageError("poll must be more than 0 seconds")
    extra: dict[str, Any] = {k: data[k] for k in ("builder", "registry", "entity") if k in data}
    if "builder" in extra and not isinstance(extra["builder"], dict):
        raise ConfigError("agent config (-c): builder must be an object")
    if "registry" in extra and not isinstance(extra["registry"], dict | str):
        raise ConfigError("agent config (-c): registry must be host:port or an object with url")
    from launchctl.buildconfig import check_config

    # The agent's own file may hold credentials in plain text (it is its owner's); they
    # are masked in what the builder prints all the same.
    check_config(extra, "agent config (-c)", literal_ok=True)
    return AgentSettings(
        queues=all_queues,
        max_jobs=jobs,
        env={k: str(v) for k, v in env.items()},
        grace_s=grace_s,
        poll_s=poll_s,
        extra=extra,
    )


def queue_list(queues: list[str]) -> list[str]:
    """``-q a -q b`` and ``-q a,b`` both name two queues."""
    out: list[str] = []
    for q in queues:
        out.extend(part.strip() for part in q.split(",") if part.strip())
    return out


def _seconds(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise UsageError(f"{what} must be a number of seconds, got {value!r}")
    return float(value)
