"""The rules for names: what a launcher may type as a project, entity, run or job name.

A name is data. Macros such as ``${project_name}`` can put it into a path on the
host (a queue's volume, a cache folder), so every name obeys one rule, checked at
launch and again by the agent when it claims a run (a hand-edited row cannot skip it):
at most 128 characters, no path separator (``/`` or ``\\``), no control character,
and no leading dot (so never ``.`` or ``..``). Project and entity names also follow
W&B's rule for projects (none of ``# ? % :``). A run's display name (``--name``) may
hold spaces, as W&B's may.

Names that become identifiers of their own (queues, entities, jobs: a job name is part
of an image tag) follow the stricter rule of :func:`check_identifier`, which passes the
first rule too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from launchctl.errors import LaunchctlError, UsageError

MAX_NAME = 128
SEPARATORS = frozenset("/\\")
# W&B refuses these in project names (wandb.sdk.wandb_settings: "/\\#?%:").
WANDB_PROJECT_FORBIDS = frozenset("#?%:")
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class InvalidName(UsageError):
    """A name that breaks the rules above."""


def _shown(value: str) -> str:
    text = ascii(value)  # control characters shown escaped, never printed raw
    return text if len(text) <= 60 else text[:57] + "..."


def check_name(value: object, what: str = "name", *, path_safe_only: bool = False) -> str:
    """Return ``value`` if it is a valid ``what`` name (``project``, ``entity``, ``run``).

    ``path_safe_only`` keeps W&B's freer rule for display names (run names): only the
    rule that keeps a name one path component. Raises :class:`InvalidName` naming the
    broken rule.
    """
    if not isinstance(value, str) or not value:
        raise InvalidName(f"invalid {what} name {value!r}: it must be non-empty text")
    if (value, what, path_safe_only) in _GOOD:  # issue 17: an agent checks the same names
        return value  # for every run it starts
    where = f"invalid {what} name {_shown(value)}"
    if len(value) > MAX_NAME:
        raise InvalidName(f"{where}: longer than {MAX_NAME} characters ({len(value)})")
    if value.startswith("."):
        raise InvalidName(f"{where}: it must not start with '.'")
    bad = sorted(set(value) & SEPARATORS)
    if not path_safe_only:
        bad += sorted(set(value) & WANDB_PROJECT_FORBIDS)
    if bad:
        raise InvalidName(f"{where}: it must not contain {' '.join(repr(c) for c in bad)}")
    if not value.isprintable():  # control characters, line and paragraph separators
        raise InvalidName(f"{where}: it must not contain control characters")
    if len(_GOOD) >= 1024:
        _GOOD.clear()
    _GOOD.add((value, what, path_safe_only))
    return value


_GOOD: set[tuple[str, str, bool]] = set()  # names check_name passed, as it was asked


def check_run_name(value: object) -> str:
    """A run's display name: the path rule, spaces and other punctuation allowed."""
    return check_name(value, "run", path_safe_only=True)


def check_run_names(values: Mapping[str, Any]) -> None:
    """The names of a launch spec or a stored run (``project``, ``entity``, ``name``),
    where present. Called at launch and by the agent when it claims the run."""
    if values.get("project") is not None:
        check_name(values["project"], "project")
    if values.get("entity") is not None:
        check_name(values["entity"], "entity")
    if values.get("name") is not None:
        check_run_name(values["name"])


def check_identifier(name: str, what: str = "queue") -> str:
    """Queue, entity and job names: 1-64 letters, digits, ``.``, ``_`` or ``-``,
    starting with a letter or digit (a job name becomes part of an image tag)."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        shown = _shown(name) if isinstance(name, str) else repr(name)
        raise LaunchctlError(
            f"invalid {what} name {shown}: use 1-64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return name
