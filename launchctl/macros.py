"""Macros in queue configs, by W&B's rule: ``${name}`` with ``name`` word characters.

Built-ins first (``project_name``, ``entity_name``, ``run_id``, ``run_name``,
``image_uri``, ``author``: W&B's list, wandb/sdk/launch/_project_spec.py
``LaunchProject.fill_macros``), then the agent's environment. (W&B lets an agent variable
of a built-in's name win; here the built-in does, so that no variable of the agent's can
stand for a run's name in a host path.) Only string leaves are touched, never
keys. An unknown name stays as written and is reported, so it can be shown as a
warning on the run.

Macros expand only in text a queue's admin wrote, in one pass with the ``{{field}}``
template values (``launchctl.variables.render``): a value a launcher typed
(``--set-var``, ``--name``, ``-p``) is put in as data and never read again for macros,
so ``--set-var tag='${AGENT_SECRET}'`` stays those very characters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MACRO = re.compile(r"\$\{(\w+)\}")
BUILTINS = ("project_name", "entity_name", "run_id", "run_name", "image_uri", "author")
# Built-ins whose values a launcher chose: data, checked like template values where they
# make a host path (launchctl.resolve).
# ``author`` is the launching user, whom LAUNCHCTL_USER names: a launcher's choice too.
FROM_LAUNCHER = frozenset({"project_name", "entity_name", "run_name", "author"})


class Macros:
    """What ``${name}`` means for one run: built-ins, then the agent's environment.

    ``pending`` names built-ins not known yet (``image_uri`` before the build): they are
    left as written without a warning. Unknown names are collected in ``unknown``.
    """

    def __init__(
        self,
        builtins: Mapping[str, str],
        env: Mapping[str, str],
        unknown: set[str] | None = None,
        *,
        pending: frozenset[str] = frozenset(),
    ) -> None:
        self.builtins = builtins
        self.env = env
        self.unknown = unknown if unknown is not None else set()
        self.pending = pending

    def value(self, name: str) -> str | None:
        """The text ``${name}`` stands for, or None to leave it as written."""
        if name in self.builtins:
            return self.builtins[name]
        if name in self.pending:
            return None
        if name in self.env:
            return self.env[name]
        self.unknown.add(name)
        return None

    def from_launcher(self, name: str) -> bool:
        """Whether ``${name}`` stands for text a launcher chose (a run's name, project...)."""
        return name in FROM_LAUNCHER and name in self.builtins


def builtins_for(run: Mapping[str, Any], image_uri: str | None = None) -> dict[str, str]:
    """The built-ins' values for a run (a stored run row): ``author`` is the user who
    launched it (its spec's), checked by the rule for names, as the run's names are."""
    from launchctl import names

    author = (run.get("spec") or {}).get("author")
    if author is not None:
        names.check_name(author, "author", path_safe_only=True)
    values = {
        "project_name": run.get("project"),
        "entity_name": run.get("entity"),
        "run_id": run.get("id"),
        "run_name": run.get("name"),
        "image_uri": image_uri,
        "author": author,
    }
    return {k: str(v) for k, v in values.items() if v is not None}


def expand(
    config: Any,
    builtins: Mapping[str, str],
    env: Mapping[str, str],
    unknown: set[str] | None = None,
) -> Any:
    """Return ``config`` with macros replaced; names left unresolved go into ``unknown``.

    Only for text an admin wrote, with no launcher's values in it yet: a queue config is
    rendered with ``launchctl.variables.render(config, values, Macros(...))`` instead.
    """
    macros = Macros(builtins, env, unknown)

    def one(match: re.Match[str]) -> str:
        value = macros.value(match.group(1))
        return match.group(0) if value is None else value

    if isinstance(config, dict):
        return {k: expand(v, builtins, env, unknown) for k, v in config.items()}
    if isinstance(config, list):
        return [expand(v, builtins, env, unknown) for v in config]
    if isinstance(config, str):
        return MACRO.sub(one, config)
    return config
