"""A queue's limits on what one user may hold in flight (issue 18).

``limits: {per_user: 2}`` in a queue config keeps any one launcher from holding more
than that many of the queue's runs in flight (claimed, building, starting, running), so
one labmate's 200 queued runs do not starve another's. The claim enforces it in its own
transaction (``launchctl.store.runs.PER_USER_OK``); this module checks what an admin
writes.
"""

from __future__ import annotations

from typing import Any

from launchctl.errors import ConfigError

LIMIT_KEYS = ("per_user",)
MAX_PER_USER = 100_000


def check_limits(limits: Any, *, where: str = "queue config") -> None:
    """Refuse a ``limits`` section that is not ``{per_user: N}`` with N a whole number >= 1."""
    if not isinstance(limits, dict):
        raise ConfigError(f'{where}: limits must be an object, e.g. {{"per_user": 2}}')
    for key in limits:
        if key not in LIMIT_KEYS:
            raise ConfigError(
                f"{where}: unknown key limits.{key} (allowed: {', '.join(LIMIT_KEYS)})"
            )
    if "per_user" in limits:
        value = limits["per_user"]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PER_USER:
            raise ConfigError(
                f"{where}: limits.per_user must be a whole number from 1 to {MAX_PER_USER},"
                f" got {value!r}"
            )
