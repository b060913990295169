"""Queues: config validation and the operations the CLI calls.

A queue's resource type and the options of its ``resource_args`` come from the runner
registry (``launchctl.runners.registry``), the one list of resource types.
"""

from __future__ import annotations

from typing import Any

from launchctl import guardrails, variables
from launchctl.errors import ConfigError, LaunchctlError
from launchctl.gpus.policy import check_sharing
from launchctl.names import check_identifier
from launchctl.runners import registry
from launchctl.store import Row, Store

# Top-level keys a queue config may hold, beside W&B's `resource_args`.
CONFIG_KEYS = (
    "resource_args",
    "builder",
    "registry",
    "template_variables",
    "artifact_cache",
    "ceilings",
    "gpu_sharing",
    "retry",
    "run_as",
)


def check_name(name: str, what: str = "queue") -> str:
    """Queue (and entity, job) names: the rule lives in launchctl.names."""
    return check_identifier(name, what)


def check_resource(resource: str) -> str:
    """A resource type this build can run; one line saying why not otherwise."""
    return registry.find(resource).name


def validate_resource_args(args: Any, *, where: str, resource: str | None = None) -> None:
    """Check W&B's ``resource_args`` shape: ``{resource-type: {option: value}}``."""
    if not isinstance(args, dict):
        raise ConfigError(f"{where}: resource_args must be an object keyed by resource type")
    for key, options in args.items():
        why = registry.problem(key)
        if why is not None:
            raise ConfigError(f"{where}: {why}")
        if resource is not None and key != resource:
            raise ConfigError(
                f"{where}: this queue runs {resource}, but resource_args configures {key}"
            )
        if not isinstance(options, dict):
            raise ConfigError(f"{where}: resource_args.{key} must be an object")
        allowed = registry.find(key).options
        if allowed is not None:
            for option in options:
                if option not in allowed:
                    raise ConfigError(
                        f"{where}: resource_args.{key} does not allow {option!r}"
                        f" (allowed: {', '.join(sorted(allowed))})"
                    )
        # A queue's config names its resource; a launch's own resource args do not, and
        # only a queue (an admin) may refer to secrets. `e` is docker's alias: plain values.
        for option in ("env", "e") if allowed is not None else ():
            if options.get(option) is not None:
                _check_env(
                    options[option],
                    f"{where}: resource_args.{key}.{option}",
                    secrets=option == "env" and resource is not None,
                )
        builder = options.get("builder")
        if isinstance(builder, dict) and "network" in builder:
            raise ConfigError(
                f"{where}: resource_args.{key}.builder.network is not allowed: the build network"
                " is set only by the queue's admin, in the queue config's builder.network"
            )


def _check_env(env: Any, where: str, *, secrets: bool = False) -> None:
    """``env`` as an object of plain values (and, where ``secrets``, ``{"secret": "NAME"}``
    references), or a list of ``NAME=value`` strings. Errors never quote a value."""
    from launchctl.secrets import is_secret_ref

    if isinstance(env, dict):
        for k, v in env.items():
            if isinstance(v, dict):
                if not secrets:
                    raise ConfigError(
                        f"{where}: {k!r} refers to a secret; only a queue's config may refer"
                        " to secrets, in resource_args.<resource>.env"
                    )
                if not is_secret_ref(v):
                    raise ConfigError(
                        f'{where}: {k!r} is not a secret reference: write {{"secret": "NAME"}}'
                        " and nothing else, NAME being 1-64 letters, digits, '.', '_' or '-'"
                    )
            elif not isinstance(v, str | int | float | bool):
                what = ', or {"secret": "NAME"}' if secrets else ""
                raise ConfigError(f"{where}: value of {k!r} must be a string or number{what}")
    elif isinstance(env, list):
        for item in env:
            if not isinstance(item, str) or "=" not in item:
                raise ConfigError(f"{where}: list items must be 'NAME=value' strings")
    else:
        raise ConfigError(f"{where}: must be an object or a list of 'NAME=value'")


def queue_secret_refs(config: dict[str, Any]) -> list[str]:
    """The secret names a (valid) queue config refers to in its ``env``, each once."""
    from launchctl.secrets import secret_refs

    names: list[str] = []
    for options in (config.get("resource_args") or {}).values():
        env = options.get("env") if isinstance(options, dict) else None
        if isinstance(env, dict):
            names.extend(secret_refs(env))
    return list(dict.fromkeys(names))


RETRY_ON = ("failed", "timeout")


def check_retry(retry: Any, *, where: str = "queue config") -> dict[str, Any]:
    """``retry: {max: N, on: [failed, timeout], backoff_s: S}``; returns it with defaults."""
    if not isinstance(retry, dict):
        raise ConfigError(f"{where}: retry must be an object like {{max: 2, on: [failed]}}")
    unknown = sorted(set(retry) - {"max", "on", "backoff_s"})
    if unknown:
        raise ConfigError(
            f"{where}: retry has unknown key {unknown[0]!r} (allowed: max, on, backoff_s)"
        )
    most = retry.get("max", 0)
    if isinstance(most, bool) or not isinstance(most, int) or not 0 <= most <= 100:
        raise ConfigError(f"{where}: retry.max must be a whole number from 0 to 100")
    on = retry.get("on", list(RETRY_ON))
    if not isinstance(on, list) or not all(item in RETRY_ON for item in on):
        raise ConfigError(f"{where}: retry.on must be a list of: {', '.join(RETRY_ON)}")
    backoff = retry.get("backoff_s", 0)
    if (
        isinstance(backoff, bool)
        or not isinstance(backoff, int | float)
        or not 0 <= backoff <= 86400
    ):
        raise ConfigError(f"{where}: retry.backoff_s must be a number of seconds (0 to 86400)")
    return {"max": most, "on": on, "backoff_s": float(backoff)}


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
    from launchctl import buildconfig

    buildconfig.check_config(config, where)  # its builder and registry sections
    if "gpu_sharing" in config:
        check_sharing(config["gpu_sharing"], where=where)
    if "retry" in config:
        check_retry(config["retry"], where=where)
    from launchctl import runas

    runas.check_config(config, resource, where)  # an existing user, never root
    check_runner = registry.find(resource).check_config  # the runner's own rules
    problem = check_runner(config) if check_runner is not None else None
    if problem is not None:
        raise ConfigError(f"{where}: {problem}")
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


def _normalized(config: dict[str, Any]) -> dict[str, Any]:
    """The config with its template definitions typed (a default of "2" stored as 2)."""
    if not config.get("template_variables"):
        return config
    return {**config, "template_variables": variables.check_definitions(config)}


def create(
    store: Store,
    name: str,
    *,
    resource: str,
    config: dict[str, Any] | None = None,
    entity: str | None = None,
    description: str | None = None,
) -> Row:
    """Create a queue owned by ``entity`` (default: the user's own), by one of its admins."""
    from launchctl import teams

    check_name(name)
    check_resource(resource)
    config = config or {}
    validate_config(config, resource)
    if store.queues.find(name) is not None:
        raise LaunchctlError(f"queue '{name}' already exists")
    if entity is not None:
        teams.require_admin(store, entity, action="create queues in")
    else:
        # Written last, so that a refused command writes nothing.
        entity = teams.ensure_personal(store)
        teams.require_admin(store, entity, action="create queues in")
    return store.queues.create(
        name, resource=resource, entity=entity, config=_normalized(config), description=description
    )


def _admin_queue(store: Store, name: str, action: str) -> Row:
    """The queue, once the current user is known to be an admin of its entity."""
    from launchctl import teams

    queue = store.queues.get(name)
    teams.require_admin(store, queue["entity"], action=action)
    return queue


def edit(
    store: Store, name: str, *, config: dict[str, Any] | None = None, description: str | None = None
) -> Row:
    queue = _admin_queue(store, name, "edit the queues of")
    fields: dict[str, Any] = {}
    if config is not None:
        validate_config(config, queue["resource"])
        fields["config"] = _normalized(config)
    if description is not None:
        fields["description"] = description
    if not fields:
        raise LaunchctlError("nothing to change: pass --config or --description")
    return store.queues.update(name, **fields)


def listing(store: Store) -> list[Row]:
    """Every queue with its counts of ``queued`` and ``active`` runs, by name."""
    return store.queues.all()


def show(store: Store, name: str) -> Row:
    """One queue with ``runs``: its count of runs in each state."""
    row = store.queues.get(name)
    row["runs"] = store.queues.counts(row["id"])
    return row


def set_paused(store: Store, name: str, paused: bool) -> Row:
    _admin_queue(store, name, "pause or resume the queues of")
    return store.queues.update(name, paused=paused)


def delete(store: Store, name: str, *, force: bool) -> dict[str, int]:
    _admin_queue(store, name, "delete the queues of")
    return store.queues.delete(name, force=force)


def template_fields(store: Store, name: str) -> list[dict[str, Any]]:
    """Each field the queue's config uses, with its definition (W&B's "Parse configuration")."""
    config = store.queues.get(name)["config"]
    definitions = config.get("template_variables") or {}
    body = {k: v for k, v in config.items() if k != "template_variables"}
    used = variables.fields(body)
    names = list(dict.fromkeys([*used, *definitions]))
    return [
        {"name": n, "used": n in used, "defined": n in definitions, **(definitions.get(n) or {})}
        for n in names
    ]


def set_template(
    store: Store, name: str, definitions: dict[str, dict[str, Any]], *, replace: bool = False
) -> Row:
    """Add or replace template variable definitions; the config is checked as a whole."""
    queue = _admin_queue(store, name, "change the templates of")
    config = dict(queue["config"])
    current = {} if replace else dict(config.get("template_variables") or {})
    current.update(definitions)
    config["template_variables"] = current
    validate_config(config, queue["resource"])
    return store.queues.update(name, config=_normalized(config))


def unset_template(store: Store, name: str, variable: str) -> Row:
    queue = _admin_queue(store, name, "change the templates of")
    config = dict(queue["config"])
    current = dict(config.get("template_variables") or {})
    if variable not in current:
        raise LaunchctlError(f"queue {name} has no template variable {variable}")
    del current[variable]
    config["template_variables"] = current
    if not current:
        del config["template_variables"]
    validate_config(config, queue["resource"])
    return store.queues.update(name, config=config)


def render(store: Store, name: str, set_vars: dict[str, Any]) -> dict[str, Any]:
    """The queue's config as a run would get it (a dry run): fields filled, macros resolved
    where they can be (the agent's environment; run built-ins only exist at claim time)."""
    import os

    from launchctl import macros

    queue = store.queues.get(name)
    definitions = variables.check_definitions(queue["config"])
    values = variables.resolve_values(name, definitions, set_vars)
    body = {k: v for k, v in queue["config"].items() if k != "template_variables"}
    unknown: set[str] = set()
    rendered = variables.render(body, values, macros.Macros({}, dict(os.environ), unknown))
    return {"config": rendered, "values": values, "unresolved_macros": sorted(unknown)}
