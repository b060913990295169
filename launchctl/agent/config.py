"""The agent's settings, their defaults, and how flags, environment and a config file set them.

The config file is W&B's launch-config.yaml (``-c``; without it W&B's default file
``~/.config/wandb/launch-config.yaml`` when there is one), checked by W&B's rules (its
``AgentConfig`` model, wandb/sdk/launch/agent/config.py): W&B's keys, plus launchctl's own
``env``, ``grace_s`` and ``poll_s``; any other top-level key is refused. Precedence is W&B's
(``resolve_agent_config`` in wandb/sdk/launch/_launch.py): the command line over the
environment (``WANDB_ENTITY``, ``WANDB_LAUNCH_MAX_JOBS``) over the file over the defaults;
queues named with ``-q`` replace the file's, as W&B's do.

``secure_mode`` is enforced as W&B's agent does it: a run whose spec overrides the entry point
fails at stage agent. Keys that mean nothing on one machine (a kaniko builder, a cloud
environment, an ECR/GCR/ACR registry type, sweep schedulers...) are accepted and listed in
``AgentOptions.unused``, which the agent says once at start: never silently dropped.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launchctl.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from launchctl.gpus.allocator import GpuOptions
    from launchctl.store import Store

# W&B's keys (AgentConfig, wandb/sdk/launch/agent/config.py), then launchctl's extensions.
WANDB_KEYS = (
    "entity", "queues", "max_jobs", "max_schedulers", "secure_mode", "verbosity",
    "stopped_run_timeout", "registry", "environment", "builder",
)  # fmt: skip
MAX_JOBS = 100_000  # the most runs at once an agent takes (-1: no limit); SQLite's integers
# are 64-bit, and a bigger number is a typo, not a machine
OWN_KEYS = ("env", "grace_s", "poll_s", "hooks")
AGENT_KEYS = WANDB_KEYS + OWN_KEYS
DEFAULT_CONFIG_FILE = "~/.config/wandb/launch-config.yaml"  # W&B's LAUNCH_CONFIG_FILE
BUILDER_TYPES = ("docker", "kaniko", "noop")  # W&B's BuilderType
REGISTRY_TYPES = ("ecr", "acr", "gcr")  # W&B's RegistryType
ENVIRONMENT_TYPES = ("aws", "gcp", "azure")  # W&B's EnvironmentType
PLATFORMS = ("linux/amd64", "linux/arm64")  # W&B's TargetPlatform
_TRUE = ("1", "on", "t", "true", "y", "yes")  # how pydantic reads a bool from text
_FALSE = ("0", "off", "f", "false", "n", "no")


@dataclass
class AgentOptions:
    """How an agent works: the one definition of its settings and their defaults."""

    max_jobs: int = 1  # -1: unlimited (default 1, as W&B's)
    lease_s: float = 60.0
    grace_s: float = 10.0  # between SIGTERM and SIGKILL when stopping a run
    fallback_poll_s: float = 2.0  # new work wakes the agent at once anyway
    env: dict[str, str] = field(default_factory=dict)  # over the agent's own, for runs
    builder: dict[str, Any] = field(default_factory=dict)
    registry: Any = None  # "host:port" or {url, username, password}
    progress: bool = False
    gpus: GpuOptions | None = None  # GPU scheduling (launchctl.gpus); None: off
    requeue_running: bool = False  # on stop, requeue running runs (drain for maintenance)
    resume_queues: bool = False  # after an unclean stop, keep claiming from its queues
    entity: str | None = None  # the entity whose queues it serves; None: any it may serve
    max_schedulers: int = 1  # W&B's sweep schedulers: none run here
    verbosity: int = 0  # 0: a status line every 5 minutes; 1: every 20 s; 2: also details
    secure_mode: bool = False  # W&B's: a run that overrides its entry point is refused
    config_file: str | None = None  # the agent config file read, if any
    hooks: list[dict[str, Any]] = field(default_factory=list)  # when a run ends (launchctl.hooks)
    unused: list[str] = field(default_factory=list)  # settings read but not used here
    sources: dict[str, str] = field(default_factory=dict, compare=False)  # setting -> where from


def load_agent_config(
    config: str | None,
    *,
    queues: list[str],
    max_jobs: int | str | None,
    grace: float | None,
    poll: float | None,
    entity: str | None = None,
    max_schedulers: int | str | None = None,
    verbosity: int = 0,
    environ: Mapping[str, str] | None = None,
) -> tuple[list[str], AgentOptions]:
    """The queues to serve and the options: flags over environment over the file's keys."""
    environ = os.environ if environ is None else environ
    defaults = AgentOptions()
    data, where, config_file = _read_file(config, environ)
    unknown = [k for k in data if k not in AGENT_KEYS]
    if unknown:
        hint = " (W&B names the list 'queues')" if unknown[0] == "queue" else ""
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}{hint} (allowed: {', '.join(WANDB_KEYS)};"
            f" launchctl's own: {', '.join(OWN_KEYS)})"
        )
    sources: dict[str, str] = {}
    unused: list[str] = []
    value: Any  # each setting's candidates, in order: the first set one wins
    source: str

    # -- queues: -q replaces the file's list, as W&B's resolve_agent_config does
    file_queues = data.get("queues")
    if file_queues is None:
        file_queues = []
    if not isinstance(file_queues, list) or not all(isinstance(q, str) for q in file_queues):
        raise ConfigError(f"{where}: queues must be a list of queue names")
    if queues:
        all_queues, sources["queues"] = queue_list(queues), "command line"
    else:
        all_queues, sources["queues"] = queue_list(file_queues), where
    all_queues = list(dict.fromkeys(all_queues))
    if not all_queues:
        raise UsageError("no queue to serve: pass -q QUEUE (repeatable) or queues in the config")

    # -- entity
    file_entity = data.get("entity")
    if file_entity is not None and not isinstance(file_entity, str):
        raise ConfigError(f"{where}: entity must be a name (text)")
    agent_entity: str | None = None
    for value, source in (
        (entity, "command line"),
        (environ.get("WANDB_ENTITY"), "WANDB_ENTITY"),
        (file_entity, where),
    ):
        if value is not None:
            agent_entity, sources["entity"] = value.strip() or None, source
            break

    # -- max_jobs
    jobs: Any = defaults.max_jobs
    for value, source in (
        (max_jobs, "command line"),
        (environ.get("WANDB_LAUNCH_MAX_JOBS"), "WANDB_LAUNCH_MAX_JOBS"),
        (data.get("max_jobs"), where),
    ):
        if value is not None:
            jobs, sources["max_jobs"] = _integer(value, "max_jobs", source), source
            break
    if (jobs < 1 and jobs != -1) or jobs > MAX_JOBS:
        raise UsageError(
            f"max_jobs must be a positive number up to {MAX_JOBS} or -1 (unlimited), got {jobs}"
        )

    # -- max_schedulers: how many of W&B's sweep scheduler jobs an agent runs; kept and
    # said: here the agent schedules its queues' sweeps itself, with no scheduler jobs
    schedulers = defaults.max_schedulers
    for value, source in ((max_schedulers, "command line"), (data.get("max_schedulers"), where)):
        if value is not None:
            schedulers = _integer(value, "max_schedulers", source)
            sources["max_schedulers"] = source
            if (schedulers < 1 and schedulers != -1) or schedulers > MAX_JOBS:
                raise UsageError(
                    f"max_schedulers must be a positive number or -1, got {schedulers}"
                )
            unused.append(
                f"max_schedulers {schedulers} ({source}): this agent schedules every sweep of"
                " its queues itself, with no scheduler jobs to count"
            )
            break

    # -- verbosity: -v (counted) over the file
    level = _integer(data.get("verbosity", 0) or 0, "verbosity", where)
    if verbosity:
        level, sources["verbosity"] = verbosity, "command line"
    elif "verbosity" in data:
        sources["verbosity"] = where

    # -- secure_mode: as W&B's agent (_assert_secure), a run may not override its entry point
    secure = False
    if data.get("secure_mode") is not None:
        secure = _boolean(data["secure_mode"], "secure_mode", where)
        sources["secure_mode"] = where

    # -- grace (launchctl's grace_s, else W&B's stopped_run_timeout), poll
    stopped = data.get("stopped_run_timeout")
    if stopped is not None:
        stopped = _integer(stopped, "stopped_run_timeout", where)
        if stopped < 0:
            raise UsageError(f"stopped_run_timeout must be 0 or more seconds, got {stopped}")
    for value, source in (
        (grace, "command line"),
        (data.get("grace_s"), where),
        (stopped, f"{where} (stopped_run_timeout)"),
    ):
        if value is not None:
            grace_value, sources["grace"] = value, source
            break
    else:
        grace_value = defaults.grace_s
    grace_s = _seconds(grace_value, "grace")
    poll = poll if poll is not None else data.get("poll_s", defaults.fallback_poll_s)
    poll_s = _seconds(poll, "poll")
    if poll_s <= 0:
        raise UsageError("poll must be more than 0 seconds")

    env = data.get("env") or {}
    if not isinstance(env, dict):
        raise ConfigError(f"{where}: env must be an object")
    from launchctl.runenv import env_problem

    for name, value in env.items():
        why = env_problem(name, value)
        if why is not None:
            raise ConfigError(f"{where}: env: {why}")

    builder = data.get("builder")
    if builder is None:
        builder = {}
    if not isinstance(builder, dict):
        raise ConfigError(f"{where}: builder must be an object")
    registry = data.get("registry")
    if registry is not None and not isinstance(registry, dict | str):
        raise ConfigError(f"{where}: registry must be host:port or an object with url")
    unused += _check_builder(builder, where)
    unused += _check_registry(registry, where)
    unused += _check_environment(data.get("environment"), where)
    from launchctl.buildconfig import check_config

    # The agent's own file may hold credentials in plain text (it is its owner's); they
    # are masked in what the builder prints all the same.
    extra: dict[str, Any] = {"builder": builder} if builder else {}
    if registry is not None:
        extra["registry"] = registry
    check_config(extra, where, literal_ok=True)
    hooks: list[dict[str, Any]] = []
    if data.get("hooks") is not None:  # issue 18: the agent owner's own hooks
        from launchctl.hooks import check_hooks

        hooks = check_hooks(data["hooks"], where=where, queue=False)
    return all_queues, AgentOptions(
        max_jobs=jobs,
        grace_s=grace_s,
        fallback_poll_s=poll_s,
        env={k: str(v) for k, v in env.items()},
        builder=builder,
        registry=registry if registry else None,
        entity=agent_entity,
        max_schedulers=schedulers,
        verbosity=level,
        secure_mode=secure,
        config_file=config_file,
        hooks=hooks,
        unused=unused,
        sources=sources,
    )


def _read_file(
    config: str | None, environ: Mapping[str, str]
) -> tuple[dict[str, Any], str, str | None]:
    """The config's keys, how to name it in messages, and its path (None: inline or none).

    Without ``-c``, W&B's default file is read when there is one (W&B does the same)."""
    from launchctl.configfile import load_mapping

    if config is None:
        home = environ.get("HOME") or os.path.expanduser("~")
        path = Path(home) / DEFAULT_CONFIG_FILE.removeprefix("~/")
        if not path.is_file():
            return {}, "agent config", None
        where = f"agent config {DEFAULT_CONFIG_FILE}"
        return _load_file(path, str(path), where), where, str(path)
    candidate = Path(os.path.expanduser(config)) if len(config) < 4096 else None
    is_file = False
    try:
        is_file = candidate is not None and candidate.is_file()
    except OSError:
        is_file = False
    where = f"agent config {config}" if is_file else "agent config (-c)"
    if is_file:
        assert candidate is not None
        return _load_file(candidate, config, where), where, str(candidate)
    if "\t" in config and "{" not in config:
        _tab_line(config, where)
    return _mapping(load_mapping(config, where), where), where, None


def _load_file(path: Path, given: str, where: str) -> dict[str, Any]:
    """A config file's keys. One with nothing but blank lines and comments is no keys, as
    W&B's ``yaml.safe_load(f) or {}`` reads it."""
    from launchctl.configfile import load_mapping

    _check_tabs(path, where)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = "x"  # load_mapping says what is wrong
    if all(not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()):
        return {}
    return _mapping(load_mapping(given, "agent config"), where)


def _mapping(data: Any, where: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a mapping of keys")
    return data


def _check_tabs(path: Path, where: str) -> None:
    """A TAB where YAML wants indentation: one line naming it (YAML's own error is obscure)."""
    if path.suffix.lower() == ".json":
        return
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return  # load_mapping says what is wrong
    _tab_line(text, where)


def _tab_line(text: str, where: str) -> None:
    for number, line in enumerate(text.splitlines(), 1):
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        if "\t" in indent and line.strip() and not line.lstrip().startswith("#"):
            raise ConfigError(f"{where}: line {number} is indented with a tab; YAML needs spaces")


def _check_builder(builder: dict[str, Any], where: str) -> list[str]:
    """W&B's BuilderConfig checks; returns what is read but not used here."""
    unused: list[str] = []
    kind = builder.get("type")
    if kind is not None and kind not in BUILDER_TYPES:
        raise ConfigError(
            f"{where}: builder.type must be one of {', '.join(BUILDER_TYPES)}, got {kind!r}"
        )
    if kind == "kaniko":
        unused.append(f"builder.type kaniko ({where}): images are built with the local docker")
    platform = builder.get("platform")
    if platform is not None:
        if platform not in PLATFORMS:
            raise ConfigError(
                f"{where}: builder.platform must be one of {', '.join(PLATFORMS)}, got {platform!r}"
            )
        unused.append(f"builder.platform ({where}): images are built for this machine")
    for key in ("destination", "build-context-store", "build-job-name", "secret-name",
                "secret-key", "kaniko-image"):  # fmt: skip
        value = builder.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ConfigError(f"{where}: builder.{key} must be text")
        if key == "build-context-store" and not value.startswith(("s3://", "gs://", "https://")):
            raise ConfigError(
                f"{where}: builder.build-context-store must be the URI of an S3 bucket, a GCS"
                " bucket or an Azure blob"
            )
        unused.append(f"builder.{key} ({where}): no cloud builder here")
    return unused


def _check_registry(registry: Any, where: str) -> list[str]:
    if not isinstance(registry, dict):
        return []
    kind = registry.get("type")
    if kind is None:
        return []
    if kind not in REGISTRY_TYPES:
        raise ConfigError(
            f"{where}: registry.type must be one of {', '.join(REGISTRY_TYPES)}, got {kind!r}"
        )
    return [
        f"registry.type {kind} ({where}): no cloud registry login here; images are pushed to"
        " registry.uri (or url) only when it names one"
    ]


def _check_environment(environment: Any, where: str) -> list[str]:
    if environment is None:
        return []
    if not isinstance(environment, dict):
        raise ConfigError(f"{where}: environment must be an object with type and region")
    kind = environment.get("type")
    if kind is not None and kind not in ENVIRONMENT_TYPES:
        raise ConfigError(
            f"{where}: environment.type must be one of {', '.join(ENVIRONMENT_TYPES)}, got {kind!r}"
        )
    if "region" not in environment:  # W&B's EnvironmentConfig requires the key
        raise ConfigError(f"{where}: environment needs a region (W&B requires it)")
    return [f"environment {kind or ''} ({where}): no cloud environment here".replace("  ", " ")]


def check_entity(store: Store, queues: list[str], entity: str | None, source: str) -> None:
    """Each queue belongs to the agent's entity, when it has one (``-e``, WANDB_ENTITY or
    the file's ``entity``): W&B's agent serves the queues of its one entity."""
    if entity is None:
        return
    for name in queues:
        owner = store.queues.get(name)["entity"]
        if owner != entity:
            raise UsageError(
                f"queue '{name}' belongs to entity '{owner}', not '{entity}' (the agent's"
                f" entity, from {'the ' if source == 'command line' else ''}{source}); serve it"
                f" with -e {owner}, or leave the entity out"
            )


def queue_list(queues: list[str]) -> list[str]:
    """``-q a -q b`` and ``-q a,b`` both name two queues."""
    out: list[str] = []
    for q in queues:
        out.extend(part.strip() for part in q.split(",") if part.strip())
    return out


def _integer(value: Any, what: str, source: str) -> int:
    """A whole number as W&B reads one (pydantic's int): 4, 4.0, "4", true (1)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise UsageError(f"{what} must be a whole number, got {value!r} (from {source})")


def _boolean(value: Any, what: str, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(f"{where}: {what} must be true or false, got {value!r}")


def _seconds(value: Any, what: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise UsageError(f"{what} must be a number of seconds, got {value!r}")
    return float(value)
