"""Macros in queue configs, by W&B's rule: ``${name}`` with ``name`` word characters.

Built-ins first (``project_name``, ``entity_name``, ``run_id``, ``run_name``,
``image_uri``), then the agent's environment. Only string leaves are touched, never
keys. An unknown name stays as written and is reported, so it can be shown as a
warning on the run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MACRO = re.compile(r"\$\{(\w+)\}")
BUILTINS = ("project_name", "entity_name", "run_id", "run_name", "image_uri")


def builtins_for(run: Mapping[str, Any], image_uri: str | None = None) -> dict[str, str]:
    values = {
        "project_name": run.get("project"),
        "entity_name": run.get("entity"),
        "run_id": run.get("id"),
        "run_name": run.get("name"),
        "image_uri": image_uri,
    }
    return {k: str(v) for k, v in values.items() if v is not None}


def expand(
    config: Any,
    builtins: Mapping[str, str],
    env: Mapping[str, str],
    unknown: set[str] | None = None,
) -> Any:
    """Return ``config`` with macros replaced; names left unresolved go into ``unknown``."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in builtins:
            return builtins[name]
        if name in env:
            return env[name]
        if unknown is not None:
            unknown.add(name)
        return match.group(0)

    if isinstance(config, dict):
        return {k: expand(v, builtins, env, unknown) for k, v in config.items()}
    if isinstance(config, list):
        return [expand(v, builtins, env, unknown) for v in config]
    if isinstance(config, str):
        return MACRO.sub(one, config)
    return config
