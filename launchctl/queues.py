"""Queues: config validation and the operations the CLI calls.

A queue's resource type and the options of its ``resource_args`` come from the runner
registry (``launchctl.runners.registry``), the one list of resource types.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from launchctl import guardrails, variables
from launchctl.errors import ConfigError, LaunchctlError
from launchctl.gpus.policy import check_sharing
from launchctl.names import check_identifier
from launchctl.runenv import ENV_NAME, env_problem
from launchctl.runners import local_container, registry
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
    "hooks",
    "limits",
    "stall_after",
    "on_stall",
)


def check_name(name: str, what: str = "queue") -> str:
    """Queue (and entity, job) names: the rule lives in launchctl.names."""
    return check_identifier(name, what)


def canonical(config: Any, resource: str, *, where: str = "queue config") -> dict[str, Any]:
    """A queue config in its one stored form, from either shape an admin may write.

    W&B's queue editor holds a queue's resource args body alone (a docker queue's
    ``{"env": [...], "gpus": "all"}``, a Kubernetes queue's Job manifest); launchctl's
    form wraps it in ``resource_args: {<resource>: ...}`` beside the queue's own keys
    (builder, template_variables, ceilings...). The rule, read in this order:

    1. a config holding ``resource_args`` is the wrapped form, whatever else it holds;
       one holding only the resource's own name (``{"kubernetes": {"kind": ...}}``, as
       W&B's docs show a Kubeflow queue) is that body, wrapped;
    2. a config whose keys are all queue keys (``CONFIG_KEYS``) is the wrapped form with
       no resource args (so ``{"builder": ...}`` alone is the queue's builder);
    3. anything else is a bare body for the queue's resource: every key must then be one
       of the resource's options (a key that is both, like a docker queue's ``builder``,
       is read as the body's, as W&B reads it); a body that also holds a queue-only key
       (``{"env": [...], "ceilings": {...}}``) is refused: nothing says which one is meant.

    Returns ``{"resource_args": {resource: body}, **queue keys}``; a local-container body's
    options each under their one name (``--shm_size`` -> ``shm-size``, ``m`` -> ``memory``).
    """
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: must be an object")
    if "resource_args" in config or all(key in CONFIG_KEYS for key in config):
        out = dict(config)
    elif list(config) == [resource] and isinstance(config[resource], dict):
        out = {"resource_args": dict(config)}
    else:
        # A resource with no runner in this build (kubernetes) is refused before this, at
        # create; its shape is read as for a runner that takes its cluster's own schema.
        known = registry.types().get(resource)
        allowed = known.options if known is not None else None
        if allowed is None:  # the runner takes its cluster's own schema: any key but ours
            mixed = sorted(key for key in config if key in CONFIG_KEYS)
        else:
            names = {key: _option_name(resource, key) for key in config}
            mixed = sorted(k for k, n in names.items() if n not in allowed and k in CONFIG_KEYS)
        if allowed is not None and resource != "local-container":  # (docker: W&B's words)
            unknown = sorted(k for k in config if k not in CONFIG_KEYS and k not in allowed)
            if unknown:
                raise ConfigError(
                    f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(CONFIG_KEYS)};"
                    f" or, alone, {resource} options: {', '.join(sorted(allowed))})"
                )
        if mixed:
            body = sorted(key for key in config if key not in CONFIG_KEYS)
            raise ConfigError(
                f"{where}: {mixed[0]!r} is a queue setting but {body[0]!r} is a"
                f" {resource} option: write the options under resource_args.{resource}"
                " (or the body alone, as W&B's queue editor holds it)"
            )
        out = {"resource_args": {resource: dict(config)}}
    args = out.get("resource_args")
    if resource == "local-container" and isinstance(args, dict):
        options = args.get(resource)
        if isinstance(options, dict):
            out["resource_args"] = {**args, resource: local_container.canonical_options(options)}
    return out


def _option_name(resource: str, key: str) -> str:
    return local_container.option_name(key) if resource == "local-container" else key


def notes(config: dict[str, Any]) -> list[str]:
    """What `queue show` says of a stored config: the options accepted that do nothing."""
    found: list[str] = []
    options = (config.get("resource_args") or {}).get("local-container")
    if isinstance(options, dict):
        for name, why in local_container.NO_OPS.items():
            if name in options:
                found.append(
                    f"resource_args.local-container.{name}: accepted, changes nothing: {why}"
                )
    return found


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
        if key == "local-container":  # W&B's names and refusals for docker run's options
            seen: set[str] = set()
            for option, value in options.items():
                why = local_container.option_problem(option, value, seen)
                if why is not None:
                    raise ConfigError(f"{where}: {why}")
            options = local_container.canonical_options(options)
        elif allowed is not None:
            for option in options:
                if option not in allowed:
                    raise ConfigError(
                        f"{where}: Unsupported resource_args.{key} option {option!r}."
                        f" Supported options are: {', '.join(sorted(allowed))}"
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
            why = env_problem(k, v)  # else every run would fail at its agent instead
            if why is not None:
                raise ConfigError(f"{where}: {why}")
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
    elif isinstance(env, list | str):
        # W&B's docker shape: NAME=value, or a bare NAME that passes the agent's value on
        # (docker run -e NAME); one string is one item.
        for item in env if isinstance(env, list) else [env]:
            if not isinstance(item, str):
                raise ConfigError(f"{where}: list items must be 'NAME=value' or 'NAME' strings")
            name, equals, value = item.partition("=")
            if "\0" in value:
                raise ConfigError(f"{where}: the value of {_shown(name)} holds a NUL character")
            if not ENV_NAME.fullmatch(name):
                raise ConfigError(
                    f"{where}: {_shown(name)} is not a variable name (letters, digits and"
                    " '_', not starting with a digit): items are 'NAME=value' or 'NAME'"
                )
            if not equals and name.startswith("LAUNCHCTL_"):
                raise ConfigError(
                    f"{where}: {name} is launchctl's own setting: the agent never passes it"
                    " to a run"
                )
    else:
        raise ConfigError(f"{where}: must be an object or a list of 'NAME=value' or 'NAME'")


def _shown(text: str) -> str:
    shown = ascii(text)
    return shown if len(shown) <= 40 else shown[:37] + "..."


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
    if "hooks" in config:  # issue 18: what happens when a run ends (launchctl.hooks)
        from launchctl.hooks import check_hooks

        if variables.fields(config["hooks"]):
            raise ConfigError(
                f"{where}: hooks cannot hold template fields: a hook gets the run's facts in"
                " its environment (LAUNCHCTL_RUN_ID...), never text a launcher typed"
            )
        check_hooks(config["hooks"], where=where, resource=resource)
    if "limits" in config:  # issue 18: per-user limits (launchctl.limits)
        from launchctl.limits import check_limits

        check_limits(config["limits"], where=where)
    if "stall_after" in config or "on_stall" in config:  # issue 18: stuck runs
        from launchctl.stall import check_stall

        check_stall(config, where=where)
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
    written: str | None = None,
) -> Row:
    """Create a queue owned by ``entity`` (default: the user's own), by one of its admins.

    ``config`` in either shape (``canonical``); ``written``: its text as the admin wrote
    it, kept for `queue show` (default: the config as JSON).
    """
    from launchctl import teams

    check_name(name)
    check_resource(resource)
    given = config
    config = canonical(config or {}, resource)
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
        name,
        resource=resource,
        entity=entity,
        config=_normalized(config),
        description=description,
        config_written=_written(given, written),
    )


def _written(config: dict[str, Any] | None, written: str | None) -> str | None:
    """The config's text as its admin wrote it (None: no config given)."""
    if written is not None:
        return written
    if config is None:
        return None
    import json

    return json.dumps(config, indent=2)


def _admin_queue(store: Store, name: str, action: str) -> Row:
    """The queue, once the current user is known to be an admin of its entity."""
    from launchctl import teams

    queue = store.queues.get(name)
    teams.require_admin(store, queue["entity"], action=action)
    return queue


# Where a template field's definition came from (`queue show`, issue 12).
FROM_CONFIG = "config"
FROM_TEMPLATE_SET = "queue template set"
FROM_UNKNOWN = "not recorded"


def _written_definitions(queue: Row) -> dict[str, Any] | None:
    """The template definitions of the config as its admin last wrote it (``--config``),
    typed as stored; None when no text was kept."""
    text = queue.get("config_written")
    if text is None:
        return None
    import json

    try:
        data = json.loads(text)
    except ValueError:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            return None
    try:
        raw = canonical(data, str(queue["resource"])).get("template_variables") or {}
        return {n: variables.check_definition(n, d) for n, d in dict(raw).items()}
    except (LaunchctlError, TypeError, ValueError):
        return None


def template_origins(queue: Row) -> dict[str, str]:
    """Each template definition of a queue and where it came from: ``config`` (the
    template_variables of the config last written with ``--config``, unchanged since) or
    ``queue template set``. A definition that neither says (a queue written before
    launchctl kept a config's text) is ``not recorded``."""
    config = queue["config"]
    definitions = config.get("template_variables") or {}
    written = _written_definitions(queue)
    body = {k: v for k, v in config.items() if k != "template_variables"}
    origins: dict[str, str] = {}
    for name, definition in definitions.items():
        if written is not None:
            same = written.get(name) == definition
            origins[name] = FROM_CONFIG if same else FROM_TEMPLATE_SET
        elif queue.get("config_written") is None and not body:
            origins[name] = FROM_TEMPLATE_SET  # a queue made with no config has no other
        else:
            origins[name] = FROM_UNKNOWN
    return origins


def edit(
    store: Store,
    name: str,
    *,
    config: dict[str, Any] | None = None,
    description: str | None = None,
    written: str | None = None,
    say: Callable[[str], None] | None = None,
) -> Row:
    """Replace a queue's config (either shape, as ``create``) or description.

    The new config replaces the old one whole, its template_variables included; the
    definitions made with ``queue template set`` that the new config does not define stay
    (issue 12), and ``say`` gets one line naming them. A field the new config uses and
    nothing defines is refused, with the old config's definition to copy when it had one.
    """
    queue = _admin_queue(store, name, "edit the queues of")
    fields: dict[str, Any] = {}
    if config is not None:
        stored = canonical(config, queue["resource"])
        stored, kept = _keep_template_set(queue, stored)
        validate_config(stored, queue["resource"])
        fields["config"] = _normalized(stored)
        fields["config_written"] = _written(config, written)
        if kept and say is not None:
            unused = [n for n in kept if n not in variables.fields(_body(stored))]
            extra = f" ({', '.join(unused)} not used by the new config)" if unused else ""
            say(
                f"queue {name}: kept the definitions of {', '.join(kept)} made with `queue"
                f" template set`{extra}; `queue template unset {name} FIELD` removes one"
            )
    if description is not None:
        fields["description"] = description
    if not fields:
        raise LaunchctlError("nothing to change: pass --config or --description")
    return store.queues.update(name, **fields)


def _body(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "template_variables"}


def _keep_template_set(queue: Row, new: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``new`` with the queue's ``queue template set`` definitions it does not replace,
    and their names; refused when ``new`` uses a field that nothing defines."""
    import json

    given = new.get("template_variables")
    if given is not None and not isinstance(given, dict):
        return new, []  # validate_config says what is wrong with it
    given = given or {}
    old = queue["config"].get("template_variables") or {}
    origins = template_origins(queue)
    kept = {n: d for n, d in old.items() if origins.get(n) != FROM_CONFIG and n not in given}
    if kept:
        new = {**new, "template_variables": {**given, **kept}}
    missing = [f for f in variables.fields(_body(new)) if f not in given and f not in kept]
    if missing:
        field = missing[0]
        had = old.get(field)
        copy = (
            f', e.g. "template_variables": {{"{field}": {json.dumps(had)}}}'
            " (the old config's definition)"
            if had is not None
            else f', e.g. "template_variables": {{"{field}": {{"type": "string"}}}}'
        )
        raise ConfigError(
            f"queue config (--config) uses {{{{{field}}}}} but defines it nowhere:"
            " `queue edit --config` replaces the whole config, its template_variables"
            f" included (definitions made with `queue template set` stay); define {field}"
            f" under template_variables in the new config (beside resource_args){copy};"
            f" or first with `launchctl queue template set {queue['name']} {field} --type ...`"
        )
    return new, list(kept)


def listing(store: Store) -> list[Row]:
    """Every queue with its counts of ``queued`` and ``active`` runs, by name."""
    return store.queues.all()


def show(store: Store, name: str) -> Row:
    """One queue with ``runs``: its count of runs in each state."""
    row = store.queues.get(name)
    row["runs"] = store.queues.counts(row["id"])
    row["notes"] = notes(row["config"])
    row["template_origins"] = template_origins(row)
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
    # The text as written stays: it is what --config said, and it tells which definitions
    # came from it and which from here (`queue show`, template_origins).
    return store.queues.update(name, config=_normalized(config))


def unset_template(store: Store, name: str, variable: str) -> Row:
    queue = _admin_queue(store, name, "change the templates of")
    config = dict(queue["config"])
    current = dict(config.get("template_variables") or {})
    if variable not in current:
        raise LaunchctlError(f"queue {name} has no template variable {variable}")
    if variable in variables.fields(_body(config)):
        raise ConfigError(
            f"queue config uses {{{{{variable}}}}} but has no definition for it without this"
            f" one: edit the config first so that it no longer uses {{{{{variable}}}}}"
            f" (`launchctl queue edit {name} --config ...`)"
        )
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
