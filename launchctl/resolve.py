"""What a run gets from its queue: rendered templates, checked values, merged resource args
and limits. Called at launch (to refuse bad input) and again by the agent when it plans a
run (launchctl.agent.plan), where the rules are enforced: a hand-edited row cannot get
past it.

``render`` is pure: it reads no file. The one check that needs the host (that a host path
a launcher's value chose leads nowhere else through a symbolic link) is returned as
``Resolved.host_paths`` for ``check_host_paths``; ``resolve`` does both.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from launchctl import guardrails, variables
from launchctl.errors import UsageError
from launchctl.guardrails import Limits
from launchctl.macros import Macros


@dataclass(frozen=True)
class HostPath:
    """A host path that a launcher's value helped make: once its symbolic links are
    resolved, ``source`` must still be inside the folder ``root`` the queue's admin wrote."""

    where: str  # "queue NAME: volume '...'", for the message
    source: str
    root: str


@dataclass
class Resolved:
    config: dict[str, Any]  # the queue config with its fields filled in (no definitions)
    values: dict[str, Any]  # every template variable, typed: given values, then defaults
    resource_args: dict[str, Any]  # the queue's then the run's, for the run's resource
    limits: Limits = field(default_factory=Limits)
    host_paths: list[HostPath] = field(default_factory=list)  # for check_host_paths


def resolve(
    queue: dict[str, Any] | None,
    spec: dict[str, Any],
    resource: str,
    macros: Macros | None = None,
) -> Resolved:
    """``render``, then ``check_host_paths``: the run's values by its queue's current rules."""
    resolved = render(queue, spec, resource, macros)
    check_host_paths(resolved.host_paths)
    return resolved


def render(
    queue: dict[str, Any] | None,
    spec: dict[str, Any],
    resource: str,
    macros: Macros | None = None,
) -> Resolved:
    """Check the run's template values against its queue's current rules and render; no IO.

    With ``macros`` (the agent, when it plans a run), macros are expanded in the same pass
    as the template fields, in the admin's text only (launchctl.variables.render); the
    run's own resource args, which only an admin of the queue may give, get macros too.
    The host paths that a launcher's value chose are checked here as text, and returned
    for ``check_host_paths``.
    """
    config: dict[str, Any] = (queue or {}).get("config") or {}
    given = spec.get("template_variables") or {}
    if not isinstance(given, dict):
        raise UsageError("template_variables must be an object of name: value")
    if queue is None:
        if given:
            raise UsageError(
                "--set-var (-v) needs --queue (-q): template variables belong to a queue"
            )
        definitions: dict[str, dict[str, Any]] = {}
    else:
        definitions = variables.check_definitions(config)
    name = queue["name"] if queue else "(direct)"
    values = variables.resolve_values(name, definitions, given)
    written = {k: v for k, v in config.items() if k != "template_variables"}
    body = variables.render(written, values, macros)
    own = _one_name(resource, ((spec.get("resource_args") or {}).get(resource)) or {})
    host_paths = check_mounts(name, written, values, macros, resource)
    if own and macros is not None:
        host_paths += check_mounts(name, {"resource_args": {resource: own}}, {}, macros, resource)
        own = variables.render(own, {}, macros)
    merged: dict[str, Any] = {}
    merged.update(_one_name(resource, (body.get("resource_args") or {}).get(resource)))
    merged.update(_one_name(resource, own))
    limits = guardrails.apply_ceilings(name, body.get("ceilings") or {}, guardrails.asks(merged))
    return Resolved(
        config=body, values=values, resource_args=merged, limits=limits, host_paths=host_paths
    )


def _one_name(resource: str, options: Any) -> dict[str, Any]:
    """A container's options each under its one name (W&B's ``m`` is ``memory``,
    ``--shm_size`` is ``shm-size``), so that the ceilings read what the container gets."""
    if not isinstance(options, dict):
        return {}
    if resource == "local-container":
        from launchctl.runners.local_container import canonical_options

        return dict(canonical_options(options))
    return options


def _written_mounts(config: dict[str, Any], resource: str) -> list[tuple[str, str, bool]]:
    """The host paths an admin wrote: (what, text, whether it is ``SRC:DST[:MODE]``)."""
    found: list[tuple[str, str, bool]] = []
    options = (config.get("resource_args") or {}).get(resource)
    volumes = options.get("volume") if isinstance(options, dict) else None
    for volume in volumes if isinstance(volumes, list) else [volumes]:
        if isinstance(volume, str):
            found.append(("volume", volume, True))
    cache = config.get("artifact_cache")
    if isinstance(cache, dict):
        cache = cache.get("host_path")
    if isinstance(cache, str):
        found.append(("artifact_cache", cache, False))
    return found


def check_mounts(
    queue: str,
    config: dict[str, Any],
    values: dict[str, Any],
    macros: Macros | None,
    resource: str,
) -> list[HostPath]:
    """Refuse a host path that a launcher's value (a template value, a run's name or
    project) would take out of the folder the queue's admin wrote before it.

    ``/data/${project_name}:/data`` may become ``/data/cats``, never ``/data/..`` or
    ``/etc``: the value must not hold ``..`` or ``:`` (which would change the mount),
    and the path, normalised, stays inside ``/data``. Returns the paths to check again
    with their existing symlinks resolved (``check_host_paths``), which needs the host.
    """
    found: list[HostPath] = []
    for what, text, short_syntax in _written_mounts(config, resource):
        parts = variables.pieces(text, values, macros)
        if not any(chosen for _, chosen in parts):
            continue
        where = f"queue {queue}: {what} {text!r}"
        for piece, chosen in parts:
            if chosen and short_syntax and ":" in piece:
                raise UsageError(
                    f"{where}: the value {piece!r} holds ':', which would change the mount;"
                    " a value must stay inside the folder the queue's admin wrote"
                )
        first = next(i for i, (_, chosen) in enumerate(parts) if chosen)
        before = "".join(piece for piece, _ in parts[:first])
        if short_syntax and ":" in before:
            continue  # the value is in the container's side of the mount
        rendered = "".join(piece for piece, _ in parts)
        source = rendered.split(":", 1)[0] if short_syntax else rendered
        folder = before[: before.rfind("/") + 1]
        if ".." in source.split("/"):
            raise UsageError(
                f"{where}: {source!r} leaves the folder {folder or '/'!r} the queue's admin"
                " wrote ('..' is not allowed in a value)"
            )
        if not folder:
            continue  # the admin let the value name the whole path
        root = os.path.normpath(folder)
        if not _inside(os.path.normpath(source), root):
            raise UsageError(_leaves(where, source, root))
        if os.path.isabs(root):
            found.append(HostPath(where, source, root))
    return found


def check_host_paths(host_paths: Iterable[HostPath]) -> None:
    """Refuse a host path that a symbolic link on the host takes out of its admin's folder."""
    for path in host_paths:
        if not _inside(os.path.realpath(path.source), os.path.realpath(path.root)):
            raise UsageError(_leaves(path.where, path.source, path.root))


def _leaves(where: str, source: str, root: str) -> str:
    return f"{where}: {source!r} leaves the folder {root!r} the queue's admin wrote"


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")
