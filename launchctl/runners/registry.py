"""The resource types this build can run: the one list of them, filled by the runners.

Each runner module (``launchctl/runners/<resource>.py``) declares its resource name (the
runner class's ``resource``) and the options its ``resource_args.<resource>`` accepts, and
registers the class with ``@register``. The registry imports the modules of this package
the first time it is asked, so a runner module keeps its heavy imports (docker, a
cluster's client) inside the functions that use them: ``queue create`` reads the registry.

A resource type that no module registers is refused wherever it is named (``queue
create --resource``, ``launch -r``, a ``resource_args`` key, an agent given an old queue)
with one line saying it is not available in this build: never accepted, then stuck.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from launchctl.errors import LaunchctlError

if TYPE_CHECKING:
    from launchctl.runners.base import Runner


@dataclass(frozen=True)
class ResourceType:
    """A resource type as its runner module declares it."""

    name: str  # W&B's resource name: local-process, local-container, ...
    options: frozenset[str] | None  # the keys resource_args.<name> may hold; None: any
    runner: Callable[[], Runner]  # makes the runner (its module is imported by then)
    # Why a queue config, as written, cannot run on this resource type (or None): checked
    # when the queue is created or edited, beside the checks every queue gets.
    check_config: Callable[[dict[str, Any]], str | None] | None = None
    # Whether a code or git job's run needs an image built (containers); False: it runs
    # from its working copy, as a process does (slurm, issue 14).
    builds: bool = True


# Resource names this build has no runner for, so that a refusal says what they are
# instead of calling them unknown: launchctl's planned runners (None), and W&B Launch's
# cloud runners. A runner module that registers one of these names makes it available;
# this table only words the message.
NOT_IN_THIS_BUILD: dict[str, str | None] = {
    "sagemaker": "W&B Launch's Amazon SageMaker runner",
    "vertex": "W&B Launch's Google Vertex AI runner",
    "gcp-vertex": "W&B Launch's Google Vertex AI runner",
}
# W&B's other spellings of a resource type this build has: the refusal says which.
ALIASES: dict[str, str] = {"local": "local-container"}

_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_TYPES: dict[str, ResourceType] = {}
_loaded = False
_lock = threading.Lock()

R = TypeVar("R", bound="type[Runner]")


def register(
    *,
    options: frozenset[str] | None,
    check_config: Callable[[dict[str, Any]], str | None] | None = None,
    builds: bool = True,
) -> Callable[[R], R]:
    """Class decorator: the runner class's ``resource`` becomes a resource type whose
    ``resource_args.<resource>`` may hold ``options`` (None: any key, for runners that
    hand their settings to a cluster's own schema)."""

    def decorate(cls: R) -> R:
        name = cls.resource
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"runner {cls.__name__}: bad resource name {name!r}")
        known = _TYPES.get(name)
        if known is not None and known.runner is not cls:
            raise ValueError(f"resource {name!r} is registered twice ({cls.__name__})")
        _TYPES[name] = ResourceType(name, options, cls, check_config, builds)
        return cls

    return decorate


def _load() -> dict[str, ResourceType]:
    """Every resource type: the runner modules of this package, imported once."""
    global _loaded
    if not _loaded:
        with _lock:
            if not _loaded:
                package = importlib.import_module("launchctl.runners")
                for module in pkgutil.iter_modules(package.__path__):
                    if not module.name.startswith("_"):
                        importlib.import_module(f"{package.__name__}.{module.name}")
                _loaded = True
    return _TYPES


def types() -> dict[str, ResourceType]:
    """The resource types this build can run, by name (sorted)."""
    found = _load()
    return {name: found[name] for name in sorted(found)}


def names() -> tuple[str, ...]:
    """The names of the resource types this build can run, sorted."""
    return tuple(types())


def problem(name: Any) -> str | None:
    """Why ``name`` is not a resource type this build can run (one line), or None."""
    found = types()
    runs = ", ".join(found)
    if not isinstance(name, str):
        return f"unknown resource {name!r}: choose one of {runs}"
    if name in found:
        return None
    if name in ALIASES:
        return f"resource {name!r} is W&B's older name for {ALIASES[name]}: write {ALIASES[name]}"
    if name in NOT_IN_THIS_BUILD:
        what = NOT_IN_THIS_BUILD[name]
        if what is None:
            return (
                f"resource {name!r} is not available in this build of launchctl (it runs: {runs})"
            )
        return f"resource {name!r} is {what}, not available in launchctl (it runs: {runs})"
    return f"unknown resource {name!r}: choose one of {runs}"


def _own_module(name: Any) -> ResourceType | None:
    """``name``'s type from its own module alone (``local-process``: ``local_process``), as
    every runner of this package is named: an agent or a direct launch imports only the
    runner it uses (the rest cost about 8 ms of each start). None where that module does
    not register ``name``: the whole package is read then, by ``types``."""
    if not isinstance(name, str) or not _NAME.match(name):
        return None
    if name not in _TYPES and not _loaded:
        module = f"{__package__}.{name.replace('-', '_')}"
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
    return _TYPES.get(name)


def find(name: Any) -> ResourceType:
    """The resource type ``name``; a LaunchctlError saying why if this build has none."""
    own = _own_module(name)
    if own is not None:
        return own
    why = problem(name)
    if why is not None:
        raise LaunchctlError(why)
    return types()[name]


def get(name: str) -> Runner:
    """A runner for the resource type ``name``."""
    return find(name).runner()
