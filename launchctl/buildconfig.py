"""The ``builder`` section of queue and agent configs: its checks.

``builder.network`` (the network of the build's RUN steps) is the queue admin's or the
agent owner's choice: the engine's default bridge network unless one of them says ``host``.
"""

from __future__ import annotations

from typing import Any

from launchctl.errors import ConfigError

# `docker build --network` values a queue may name; bridge and default: the engine's default.
BUILD_NETWORKS = ("bridge", "default", "host", "none")


def check_network(value: Any, where: str) -> str | None:
    """``builder.network``: None (the engine's default) or one of BUILD_NETWORKS."""
    if value is None:
        return None
    if not isinstance(value, str) or value not in BUILD_NETWORKS:
        raise ConfigError(
            f"{where}: builder.network must be one of {', '.join(BUILD_NETWORKS)}"
            " (builds use the engine's default bridge network unless it says host)"
        )
    return None if value in ("bridge", "default") else value


def check_config(config: dict[str, Any], where: str) -> None:
    """The builder section of a queue (or an agent) config."""
    builder = config.get("builder")
    if isinstance(builder, dict):
        check_network(builder.get("network"), where)
