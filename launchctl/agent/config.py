"""The agent's settings, their defaults, and how flags over a config file set them.

The config file takes W&B's launch-config keys (``-c``). ``entity`` is accepted, so that
a W&B agent config loads, but not read: a queue names its own entity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from launchctl.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from launchctl.gpus.allocator import GpuOptions

AGENT_KEYS = ("queues", "max_jobs", "env", "grace_s", "poll_s", "builder", "registry", "entity")


@dataclass
class AgentOptions:
    """How an agent works: the one definition of its settings and their defaults."""

    max_jobs: int = 1  # -1: unlimited (default 1, as W&B's)
    lease_s: float = 60.0
    grace_s: float = 10.0  # between SIGTERM and SIGKILL when stopping a run
    fallback_poll_s: float = 2.0  # new work wakes the agent at once anyway
    env: dict[str, str] = field(default_factory=dict)  # over the agent's own, for runs
    builder: dict[str, Any] = field(default_factory=dict)
    registry: Any = None  # "host:port" or {url, username, password}
    progress: bool = False
    gpus: GpuOptions | None = None  # GPU scheduling (launchctl.gpus); None: off
    requeue_running: bool = False  # on stop, requeue running runs (drain for maintenance)
    resume_queues: bool = False  # after an unclean stop, keep claiming from its queues


def load_agent_config(
    config: str | None,
    *,
    queues: list[str],
    max_jobs: int | None,
    grace: float | None,
    poll: float | None,
) -> tuple[list[str], AgentOptions]:
    """The queues to serve and the options, from the flags over the config file's keys."""
    defaults = AgentOptions()
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
    jobs = max_jobs if max_jobs is not None else data.get("max_jobs", defaults.max_jobs)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or (jobs < 1 and jobs != -1):
        raise UsageError(f"max_jobs must be a positive number or -1 (unlimited), got {jobs!r}")
    env = data.get("env", {})
    if not isinstance(env, dict):
        raise ConfigError("agent config (-c): env must be an object")
    grace = grace if grace is not None else data.get("grace_s", defaults.grace_s)
    poll = poll if poll is not None else data.get("poll_s", defaults.fallback_poll_s)
    grace_s = _seconds(grace, "grace")
    poll_s = _seconds(poll, "poll")
    if poll_s <= 0:
        raise UsageError("poll must be more than 0 seconds")
    extra: dict[str, Any] = {k: data[k] for k in ("builder", "registry") if k in data}
    if "builder" in extra and not isinstance(extra["builder"], dict):
        raise ConfigError("agent config (-c): builder must be an object")
    if "registry" in extra and not isinstance(extra["registry"], dict | str):
        raise ConfigError("agent config (-c): registry must be host:port or an object with url")
    from launchctl.buildconfig import check_config

    # The agent's own file may hold credentials in plain text (it is its owner's); they
    # are masked in what the builder prints all the same.
    check_config(extra, "agent config (-c)", literal_ok=True)
    return all_queues, AgentOptions(
        max_jobs=jobs,
        grace_s=grace_s,
        fallback_poll_s=poll_s,
        env={k: str(v) for k, v in env.items()},
        builder=extra.get("builder") or {},
        registry=extra.get("registry"),
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
