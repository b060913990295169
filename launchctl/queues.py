"""Queues: their resource types, config validation, and the operations the CLI calls."""

from __future__ import annotations

import re
from typing import Any

from launchctl import guardrails, identity, variables
from launchctl.errors import ConfigError, LaunchctlError
from launchctl.store import Row, Store

RESOURCES = ("local-process", "local-container", "kubernetes", "slurm")

# Top-level keys a queue config may hold, beside W&B's `resource_args`.
CONFIG_KEYS = (
    "resource_args",
    "builder",
    "registry",
    "template_variables",
    "artifact_cache",
    "ceilings",
)

# Options each resource type accepts in `resource_args.<resource>`; None = free-form
# (those runners pass their settings through to the cluster's own schema).
RESOURCE_OPTIONS: dict[str, frozenset[str] | None] = {
    "local-process": frozenset({"env", "cpus", "memory", "gpus", "max_run_time"}),
    "local-container": frozenset(
        {
            "env",
            "e",
            "gpus",
            "cpus",
            "memory",
            "shm-size",
            "ulimit",
            "workdir",
            "name",
            "pids-limit",
            "platform",
            "volume",
            "network",
            "builder",
            "max_run_time",
        }
    ),
    "kubernetes": None,
    "slurm": None,
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(name: str, what: str = "queue") -> str:
    if not _NAME.match(name):
        raise LaunchctlError(
            f"invalid {what} name {name!r}: use 1-64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return name


def check_resource(resource: str) -> str:
    if resource not in RESOURCES:
        raise LaunchctlError(f"unknown resource {resource!r}: choose one of {', '.join(RESOURCES)}")
    return resource


def validate_resource_args(args: Any, *, where: str, resource: str | None = None) -> None:
    """Check W&B's ``resource_args`` shape: ``{resource-type: {option: value}}``."""
    if not isinstance(args, dict):
        raise ConfigError(f"{where}: resource_args must be an object keyed by resource type")
    for key, options in args.items():
        if key not in RESOURCES:
            raise ConfigError(
                f"{where}: resource_args has unknown resource {key!r}"
                f" (expected one of {', '.join(RESOURCES)})"
            )
        if resource is not None and key != resource:
            raise ConfigError(
                f"{where}: this queue runs {resource}, but resource_args configures {key}"
            )
        if not isinstance(options, dict):
            raise ConfigError(f"{where}: resource_args.{key} must be an object")
        allowed = RESOURCE_OPTIONS[key]
        if allowed is not None:
            for option in options:
                if option not in allowed:
                    raise ConfigError(
                        f"{where}: resource_args.{key} does not allow {option!r}"
                        f" (allowed: {', '.join(sorted(allowed))})"
                    )
        env = options.get("env")
        if env is not None and key == "local-process":
            _check_env(env, f"{where}: resource_args.{key}.env")


def _check_env(env: Any, where: str) -> None:
    if isinstance(env, dict):
        for k, v in env.items():
            if not isinstance(v, str | int | float | bool):
                raise ConfigError(f"{where}: value of {k!r} must be a string or number")
    elif isinstance(env, list):
        for item in env:
            if not isinstance(item, str) or "=" not in item:
                raise ConfigError(f"{where}: list items must be 'NAME=value' strings")
    else:
        raise ConfigError(f"{where}: must be an object or a list of 'NAME=value'")


def validate_config(config: dict[str, Any], resource: str, *, where: str = "queue config") -> None:
    """Validate a queue config when it is written; nothing is stored if this raises."""
    for key in config:
        if key not in CONFIG_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r} (allowed: {', '.join(CONFIG_KEYS)})")
    if "resource_args" in config:
        validate_resource_args(config["resource_args"], where=where, resource=resource)
    for key in ("builder", "template_variables"):
        if key in config and not isinstance(config[key], dict):
            raise ConfigError(f"{where}: {key} must be an object")
    if "registry" in config and not isinstance(config["registry"], dict | str):
        raise ConfigError(f"{where}: registry must be host:port or an object with url")
    definitions = variables.check_definitions(config)
    # Check the guardrails with every field at its default (or as written, if it has none).
    defaults = {n: d["default"] for n, d in definitions.items() if "default" in d}
    rendered = variables.render(config, defaults)
    if "ceilings" in config and not variables.fields(rendered.get("ceilings")):
        guardrails.check_ceilings_config(rendered["ceilings"])
    for options in (rendered.get("resource_args") or {}).values():
        if isinstance(options, dict):
            concrete = {k: v for k, v in options.items() if not variables.fields(v)}
            guardrails.asks(concrete)


def create(
    store: Store,
    name: str,
    *,
    resource: str,
    config: dict[str, Any] | None = None,
    entity: str | None = None,
    description: str | None = None,
) -> Row:
    check_name(name)
    check_resource(resource)
    config = config or {}
    validate_config(config, resource)
    return store.queues.create(
        name,
        resource=resource,
        entity=entity or identity.default_entity(),
        config=config,
        description=description,
    )


def edit(
    store: Store, name: str, *, config: dict[str, Any] | None = None, description: str | None = None
) -> Row:
    queue = store.queues.get(name)
    fields: dict[str, Any] = {}
    if config is not None:
        validate_config(config, queue["resource"])
        fields["config"] = config
    if description is not None:
        fields["description"] = description
    if not fields:
        raise LaunchctlError("nothing to change: pass --config or --description")
    return store.queues.update(name, **fields)


def set_paused(store: Store, name: str, paused: bool) -> Row:
    store.queues.get(name)
    return store.queues.update(name, paused=paused)
