"""Where a run is planned: a claimed run, its job version, its queue and the agent's context
become everything a runner needs to start it, with no IO at all.

``plan(run, version, queue, agent)`` reads no store, no file and no environment variable
(the agent's environment comes in ``agent``): it checks the run again (names, template
values, ceilings, GPUs, the run's own secret references, run_as, the build network),
renders the queue config and macros in one pass (``launchctl.resolve.render``), and works
out the limits, the cache mount, the registry and builder settings and which secrets the
run needs. The resulting ``Plan`` turns into the runner's ``Launch`` once the agent has
read those secrets, looked up the run_as user and made or found the image.

What needs IO stays with the agent's orchestrator (``launchctl.agent.starter``): the roles
and job authors (the store), the symbolic links of a host path a launcher's value chose
(``Plan.host_paths``), the secret values, the run_as account, the run's folder, the
working copy and the build. Adoption after a restart (``launchctl.agent.loop``) plans the
run again for its secrets to mask and its max_run_time.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from launchctl import buildconfig, gpus, macros, names, paths, runas
from launchctl.errors import LaunchctlError, RunnerError
from launchctl.guardrails import Limits
from launchctl.resolve import HostPath, Resolved, render
from launchctl.runenv import env_from_option, run_environment
from launchctl.runners.base import (
    METRICS_ENV,
    METRICS_FILE,
    METRICS_MOUNT,
    WANDB_DIR_MOUNT,
    CacheMount,
    Launch,
)
from launchctl.secrets import is_secret_ref, secret_refs

if TYPE_CHECKING:
    from launchctl.images.model import BuildRequest

LOG_FILE = "output.log"  # in the run's folder: everything the run and its build print
WORKDIR = "code"  # in the run's folder: the working copy (snapshot or clone)
CACHE_TARGET = "/launchctl-cache"
CACHE_ENV = ("WANDB_CACHE_DIR", "WANDB_ARTIFACT_DIR", "LAUNCHCTL_CACHE_DIR")
# The only LAUNCHCTL_ variables a run is given: the others (LAUNCHCTL_HOME above all) stay
# with the agent, so that a run cannot learn from its environment where the store is.
RUN_VARIABLES = frozenset({"LAUNCHCTL_RUN_ID", "LAUNCHCTL_CACHE_DIR"})

Row = dict[str, Any]  # a run, job version or queue as the store gives it


@dataclass(frozen=True)
class AgentContext:
    """What the agent brings to every run it plans, read once by the orchestrator."""

    agent_id: str
    home: Path  # the store's folder: each run's folder is under it
    environ: Mapping[str, str] = field(repr=False)  # the agent process's environment
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # its config's env
    builder: Mapping[str, Any] = field(default_factory=dict)  # its config's builder section
    registry: Any = None  # its config's registry
    python_bindir: str = ""  # first on a process run's PATH, as if its virtualenv were active


@dataclass(frozen=True)
class Build:
    """How the run's image is built from its working copy (a job's code or git clone)."""

    job_name: str
    dockerfile: str | None  # the run's override, else the job version's
    base_image: str | None  # builder.accelerator.base_image (or builder.cuda.base_image)
    builder: dict[str, Any]  # the agent's, the queue's, then (direct launch) the run's own
    network: str | None  # checked: None (the engine's default bridge), host or none
    special: tuple[dict[str, Any], ...] = ()  # what job create did with special files
    build_context: str | None = None  # the job version's (job create -b), in its files
    job_base_image: str | None = None  # the job version's (job create -B)
    ignored: tuple[str, ...] = ()  # builder keys of a queued run's spec that are the admin's


@dataclass(frozen=True)
class Plan:
    """Everything about starting one run that can be known without IO."""

    run: Row
    version: Row | None
    queue: Row | None
    agent: AgentContext
    entrypoint: list[str]
    args: list[str]
    config: dict[str, Any]  # the queue config, rendered, without resource_args
    resource_args: dict[str, Any]  # the queue's then the run's, rendered
    limits: Limits
    host_paths: tuple[HostPath, ...]  # to check on the host: no link leads out of them
    unknown: frozenset[str]  # macros left as written (each becomes a warning on the run)
    env_secrets: tuple[str, ...]  # the secrets the run's env refers to
    registry: Any  # the queue's (else the agent's) registry, its secret references unfilled
    run_as: Any  # the queue's run_as as its admin wrote it (looked up by the agent); None
    cache: CacheMount | None
    image: str | None  # given (-d, an image job), or once built; None for a process run
    build: Build | None  # how to make the image; None: given, or a process run

    # Worked out once per plan (issue 17: a run's start asked for its paths a dozen times).
    @functools.cached_property
    def folder(self) -> Path:
        return paths.run_dir(str(self.run["id"]), self.agent.home)

    @functools.cached_property
    def log_path(self) -> Path:
        return self.folder / LOG_FILE

    @functools.cached_property
    def workdir(self) -> Path:
        return self.folder / WORKDIR

    @functools.cached_property
    def entry_dir(self) -> Path:
        """Where a process run starts: the job's build context (``job create -b``), as
        W&B reads the entry point relative to it, else the working copy's root."""
        context = ((self.version or {}).get("metadata") or {}).get("build_context")
        if not context:
            return self.workdir
        return self.workdir / str(context)

    @property
    def process(self) -> bool:
        """Whether the run runs from its working copy, with no image (a local process, or
        a code job on a resource that builds no image: slurm, issue 14)."""
        return self.image is None and self.build is None

    @property
    def secret_names(self) -> list[str]:
        """Every secret the run needs: its env's, the registry's, the package index's."""
        found = [*self.env_secrets, *buildconfig.secret_names(None, self.registry)]
        if self.build is not None:
            found += buildconfig.secret_names(self.build.builder, None)
        return list(dict.fromkeys(found))

    def masks(self, secrets: Mapping[str, str]) -> list[str]:
        """The values to mask in the run's output and errors, given the secrets by name
        (those not given are left out: an adopted run's missing secret cannot leak)."""
        found = [secrets[name] for name in self.env_secrets if name in secrets]
        sections: list[tuple[Any, Any]] = [(None, self.registry)]
        if self.build is not None:
            sections.append((self.build.builder, None))
        for builder, registry in sections:
            if all(n in secrets for n in buildconfig.secret_names(builder, registry)):
                found += buildconfig.fill(builder, registry, secrets)[2]
        return list(dict.fromkeys(found))

    def registry_settings(
        self, secrets: Mapping[str, str]
    ) -> tuple[str | None, dict[str, str] | None]:
        """The registry's address and its credentials, filled in."""
        _, registry, _ = buildconfig.fill(None, self.registry, secrets)
        return registry_settings(registry)

    def build_request(self, secrets: Mapping[str, str]) -> BuildRequest:
        """What to ask the builder for; only for a plan with a ``build``."""
        from launchctl.images.model import BuildRequest

        if self.build is None:
            raise ValueError("this run's plan has no build")
        builder, _, _ = buildconfig.fill(self.build.builder, None, secrets)
        registry, auth = self.registry_settings(secrets)
        request = BuildRequest(
            job_name=self.build.job_name,
            source_dir=self.workdir,
            entrypoint=self.entrypoint,
            dockerfile=self.build.dockerfile,
            build_context=self.build.build_context,
            base_image=self.build.base_image,
            registry=registry,
            registry_auth=auth,
            index_url=builder.get("index_url"),
            extra_index_urls=list(builder.get("extra_index_urls") or []),
            find_links=list(builder.get("find_links") or []),
            build_args={str(k): str(v) for k, v in (builder.get("build_args") or {}).items()},
            template_dir=Path(builder["template_dir"]) if builder.get("template_dir") else None,
            network=self.build.network,
            base_refresh_s=buildconfig.base_refresh_seconds(builder.get("base_refresh")),
        )
        if builder.get("base_image"):
            request.default_base_image = str(builder["base_image"])
        if self.build.job_base_image:  # the job's own -B, over the builder's default
            request.default_base_image = self.build.job_base_image
        return request

    def with_image(self, image: str | None) -> Plan:
        """The plan once its image is known: the config rendered again, ``${image_uri}`` now
        the image this run uses (the same single pass; only ``image_uri`` changes)."""
        if image is None:
            return self
        unknown: set[str] = set(self.unknown)
        resolved = _render(self.run, self.queue, self.agent, unknown, image)
        return dataclasses.replace(
            self,
            image=image,
            resource_args=resolved.resource_args,
            host_paths=tuple(resolved.host_paths),
            unknown=frozenset(unknown),
        )

    def launch(
        self,
        secrets: Mapping[str, str],
        *,
        run_as: runas.RunAs | None = None,
        on_exit: Callable[[], None] = lambda: None,
    ) -> Launch:
        """The runner's ``Launch``: the secrets (by name) filled in, ``run_as`` the account
        the queue's run_as names (looked up by the agent)."""
        own_env = env_with_secrets(self.resource_args.get("env"), secrets, self.agent.environ)
        if not self.process:  # docker's short name for env: plain values and bare names
            own_env.update(env_from_option(self.resource_args.get("e"), _passed(self)))
        env = process_env(self, own_env, run_as) if self.process else container_env(self, own_env)
        wandb_dir = self.wandb_dir(env)
        if wandb_dir is not None:
            env["WANDB_DIR"] = WANDB_DIR_MOUNT
        metrics_dir = self.metrics_place(env, run_as)  # issue 15: a sweep trial's metrics
        registry, auth = self.registry_settings(secrets)
        return Launch(
            run=self.run,
            entrypoint=list(self.entrypoint),
            args=list(self.args),
            env=env,
            workdir=self.entry_dir if self.process else self.workdir,
            log_path=self.log_path,
            resource_args=self.resource_args,
            image=self.image,
            cache=self.cache,
            registry_auth=auth,
            registry=registry,  # issue 14: whose credentials registry_auth are
            agent_id=self.agent.agent_id,
            limits=self.limits,
            on_exit=on_exit,
            devices=gpus.launch_devices(self.run),
            secrets=self.masks(secrets),
            run_as=run_as if self.process else None,
            wandb_dir=wandb_dir,
            metrics_dir=metrics_dir,
        )

    def wandb_dir(self, env: dict[str, str]) -> Path | None:
        """The host folder for a container run's W&B offline files, when the run asked for
        W&B's offline mode (``WANDB_MODE`` offline or dryrun in its env) and chose no
        ``WANDB_DIR`` of its own: ``<run folder>/wandb-dir``, in the run's own folder
        (the agent's, never the job's files), mounted at ``WANDB_DIR_MOUNT``."""
        if self.process or self.run["resource"] != "local-container":
            return None
        if env.get("WANDB_MODE", "").strip().lower() not in ("offline", "dryrun"):
            return None
        if "WANDB_DIR" in env:
            return None
        return self.folder / paths.RUN_WANDB_DIR

    def metrics_place(self, env: dict[str, str], run_as: runas.RunAs | None) -> Path | None:
        """Give a sweep's trial (its env has W&B's ``WANDB_SWEEP_ID``) the file it reports
        its metric in, ``METRICS_ENV`` (launchctl/sweeps/results.py reads it): a
        local-process run's is ``<run folder>/metrics.jsonl``; a container run's is in
        ``<run folder>/metrics``, the folder returned here, mounted at ``METRICS_MOUNT``.
        Any other run gets nothing (and no path into the store). A run_as run cannot write
        in the agent's run folder: it reports through W&B's summary instead."""
        env.pop(METRICS_ENV, None)
        if "WANDB_SWEEP_ID" not in env:
            return None
        if self.process:
            if run_as is None:
                env[METRICS_ENV] = str(self.folder / METRICS_FILE)
            return None
        if self.run["resource"] != "local-container":
            return None
        env[METRICS_ENV] = f"{METRICS_MOUNT}/{METRICS_FILE}"
        return self.folder / paths.RUN_METRICS_DIR


def log_path(home: Path, run_id: str) -> Path:
    """Where a run's output goes (and an adopted run's keeps going): in its own folder."""
    return paths.run_dir(run_id, home) / LOG_FILE


def plan(run: Row, version: Row | None, queue: Row | None, agent: AgentContext) -> Plan:
    """Plan the start of ``run``: check it again and work out everything it gets.

    ``queue`` is None for a direct launch. Raises a LaunchctlError (the run fails at stage
    agent) for a run that breaks a rule, naming the rule, never a secret.
    """
    spec = run["spec"]
    overrides = spec.get("overrides") or {}
    entrypoint = list(overrides.get("entry_point") or (version["entrypoint"] if version else []))
    args = list(overrides.get("args") or [])
    process = run["resource"] == "local-process"
    image = None if process else _given_image(spec, version)
    unknown: set[str] = set()
    # The agent is where the rules are enforced: check the names and values again.
    try:
        names.check_run_names(run)  # they feed macros, and macros can make host paths
        # Macros expand in the admin's text only, with the template values in one pass;
        # ${image_uri} waits for an image still to be built (Plan.with_image).
        resolved = _render(run, queue, agent, unknown, image)
        gpus.check_given(run, resolved.limits.gpus)
    except LaunchctlError as exc:
        raise RunnerError(f"the run breaks its queue's rules: {exc}", stage="agent") from None
    env_secrets = _env_secrets(run, resolved.resource_args)
    config = {k: v for k, v in resolved.config.items() if k != "resource_args"}
    run_as = _run_as(run, queue)
    build: Build | None = None
    if process:
        if not [*entrypoint, *args]:
            raise RunnerError("the run has no entry point to execute", stage="agent")
        context = ((version or {}).get("metadata") or {}).get("build_context")
        if context and (
            not isinstance(context, str)
            or PurePosixPath(context).is_absolute()
            or ".." in PurePosixPath(context).parts
        ):  # checked at job create; a row edited by hand must not start a run elsewhere
            raise RunnerError(
                f"the job's build context {context!r} is not inside it", stage="agent"
            )
    elif image is None and _builds(str(run["resource"])):
        if version is None:
            raise RunnerError("the run names no image and no job to build", stage="agent")
        build = _build(run, version, config, resolved.resource_args, agent)
    return Plan(
        run=run,
        version=version,
        queue=queue,
        agent=agent,
        entrypoint=entrypoint,
        args=args,
        config=config,
        resource_args=resolved.resource_args,
        limits=resolved.limits,
        host_paths=tuple(resolved.host_paths),
        unknown=frozenset(unknown),
        env_secrets=tuple(env_secrets),
        registry=config.get("registry") or agent.registry,
        run_as=run_as,
        cache=cache_mount(config.get("artifact_cache")),
        image=image,
        build=build,
    )


def _builds(resource: str) -> bool:
    """Whether ``resource`` builds an image for a code job (issue 14: slurm does not)."""
    from launchctl.runners import registry

    try:
        return registry.find(resource).builds
    except LaunchctlError:
        return True


def _render(
    run: Row, queue: Row | None, agent: AgentContext, unknown: set[str], image: str | None
) -> Resolved:
    """The queue config rendered for ``run``: built-ins, then the agent's environment (its
    config's env over the process's); ``image_uri`` is left for later until it is known."""
    found = macros.Macros(
        macros.builtins_for(run, image),
        {**agent.environ, **agent.env},
        unknown,
        pending=frozenset() if image else frozenset({"image_uri"}),
    )
    return render(queue, run["spec"], str(run["resource"]), found)


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _env_secrets(run: Row, resource_args: Mapping[str, Any]) -> list[str]:
    """The secrets the run's env refers to, by name.

    Only a queue's config may refer to secrets (``launch`` refuses them in a run's own
    resource args); a run row whose own env refers to one anyway was edited by hand, and
    is refused.
    """
    own = _dig(run["spec"], "resource_args", run["resource"], "env")
    if isinstance(own, dict):
        keys = sorted(str(k) for k, v in own.items() if isinstance(v, dict))
        if keys:
            raise RunnerError(
                f"the run's own resource args refer to secrets in env ({', '.join(keys)});"
                " only a queue's config may refer to secrets",
                stage="agent",
            )
    env = resource_args.get("env")
    if not isinstance(env, dict):
        return []
    return secret_refs(env)  # a malformed reference: a LaunchctlError, fails at stage agent


def _run_as(run: Row, queue: Row | None) -> Any:
    """The queue's ``run_as``, as its admin wrote it: for local-process runs only."""
    value = ((queue or {}).get("config") or {}).get("run_as")
    if value is None:
        return None
    if run["resource"] != "local-process":
        raise RunnerError(
            f"queue {run['queue_name']}: run_as applies to local-process runs only",
            stage="agent",
        )
    return value


def _given_image(spec: Mapping[str, Any], version: Row | None) -> str | None:
    """The image the run names (-d), or its image job's; None: it is built."""
    given = _dig(spec, "docker", "docker_image")
    if not given and version is not None and version["source_type"] == "image":
        given = version["source"]["image"]
    return str(given) if given else None


# The builder keys a queued run's launcher may set, in its spec's ``builder`` or its resource
# args' ``builder``: the base images (W&B's builder.accelerator.base_image, the older cuda key,
# and builder.base_image). A launcher may already run any image with -d, so choosing what a
# build starts FROM gives nothing new. The rest stays the queue admin's (or the agent
# owner's): the build network, the package indexes and their credentials, build_args (they
# reach HTTP_PROXY and the like) and template_dir (a host path) (issue 9, issue 11).
RUN_BUILDER_KEYS = ("base_image", "accelerator", "cuda")


def _build(
    run: Row,
    version: Row,
    config: Mapping[str, Any],
    resource_args: Mapping[str, Any],
    agent: AgentContext,
) -> Build:
    spec = run["spec"]
    builder = {**agent.builder, **(config.get("builder") or {})}
    own = _dig(spec, "builder") if isinstance(_dig(spec, "builder"), dict) else {}
    args_builder = resource_args.get("builder")
    args_builder = args_builder if isinstance(args_builder, dict) else {}
    ignored: list[str] = []
    if run["queue_id"] is None:  # a direct launch: its own launch spec says how to build
        builder.update(own)
    else:  # queued: the launcher picks base images; the rest stays the admin's
        builder.update({k: v for k, v in own.items() if k in RUN_BUILDER_KEYS})
        ignored = sorted(k for k in own if k not in RUN_BUILDER_KEYS)
    # The resource args' builder (W&B's place for accelerator.base_image), most specific.
    builder.update({k: v for k, v in args_builder.items() if k in RUN_BUILDER_KEYS})
    base = accelerator_base_image(args_builder, own, config.get("builder"), agent.builder)
    overrides = spec.get("overrides") or {}
    return Build(
        job_name=str(version["name"]),
        dockerfile=overrides.get("dockerfile") or version.get("dockerfile"),
        base_image=base,
        builder=builder,
        network=_build_network(builder),
        special=tuple(version["source"].get("special") or ()),
        build_context=(version.get("metadata") or {}).get("build_context"),
        job_base_image=(version.get("metadata") or {}).get("base_image"),
        ignored=tuple(ignored),
    )


def accelerator_base_image(*builders: Any) -> str | None:
    """``builder.accelerator.base_image`` (or the older ``builder.cuda.base_image``), from
    the first builder section that names one."""
    for builder in builders:
        image = _dig(builder, "accelerator", "base_image") or _dig(builder, "cuda", "base_image")
        if image:
            return str(image)
    return None


def _build_network(builder: Mapping[str, Any]) -> str | None:
    """``builder.network`` of the queue's (or the agent's) config, checked again here: the
    engine's default bridge unless it says host (or none)."""
    return buildconfig.check_network(builder.get("network"), "the queue's config")


def registry_settings(value: Any) -> tuple[str | None, dict[str, str] | None]:
    """A registry as ``"host:port"`` or ``{url, username, password}``."""
    if not value:
        return None, None
    if isinstance(value, str):
        return value, None
    url = value.get("url") or value.get("uri")
    auth = None
    if value.get("username"):
        auth = {"username": str(value["username"]), "password": str(value.get("password", ""))}
    return (str(url) if url else None), auth


def cache_mount(value: Any) -> CacheMount | None:
    """The queue's ``artifact_cache``: a volume name, a host path, or an object saying which."""
    if not value:
        return None
    if isinstance(value, str):
        kind = "bind" if value.startswith("/") else "volume"
        return CacheMount(source=value, kind=kind, target=CACHE_TARGET)
    target = str(value.get("path") or CACHE_TARGET)
    if value.get("host_path"):
        return CacheMount(source=str(value["host_path"]), kind="bind", target=target)
    return CacheMount(source=str(value["volume"]), kind="volume", target=target)


def without_store(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without launchctl's own settings: ``LAUNCHCTL_HOME``, ``LAUNCHCTL_USER``...

    Issue 17: the agent filters the same environment two or three times a run; the last
    few environments filtered are kept, and one equal to a kept one (a comparison in C)
    gets a copy of its answer."""
    for seen, kept in _WITHOUT:
        if seen == env:
            return dict(kept)
    found = {k: v for k, v in env.items() if not k.startswith("LAUNCHCTL_") or k in RUN_VARIABLES}
    _WITHOUT.insert(0, (dict(env), found))
    del _WITHOUT[4:]
    return dict(found)


_WITHOUT: list[tuple[dict[str, str], dict[str, str]]] = []  # (an env, without_store of it)


def env_with_secrets(
    value: Any, secrets: Mapping[str, str], environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``env`` from resource args, its secret references replaced by their values; a bare
    ``NAME`` in a list takes ``environ``'s value (the agent's), as ``docker run -e NAME``
    does, never one of launchctl's own settings (``without_store``)."""
    if not isinstance(value, dict):
        return env_from_option(value, without_store(environ or {}))
    env: dict[str, str] = {}
    for key, item in value.items():
        env[str(key)] = secrets[item["secret"]] if is_secret_ref(item) else str(item)
    return env


def _passed(plan: Plan) -> dict[str, str]:
    """The agent's variables a bare ``NAME`` in an env list may pass on."""
    return without_store(plan.agent.environ)


def _run_env(plan: Plan, own_env: dict[str, str]) -> dict[str, str]:
    env = without_store(plan.agent.env)
    env.update(own_env)  # resource_args env, its secrets filled in
    # W&B's variables: WANDB_DOCKER names the image a run was given (-d, an image job),
    # never one built for it, and only a container has one.
    given = None if plan.process else _given_image(plan.run["spec"], plan.version)
    queue_entity = (plan.queue or {}).get("entity")
    env.update(run_environment(plan.run, docker_image=given, queue_entity=queue_entity))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def process_env(
    plan: Plan, own_env: dict[str, str], run_as: runas.RunAs | None = None
) -> dict[str, str]:
    """The agent's environment without what names the store (``LAUNCHCTL_HOME`` and the
    rest of launchctl's own settings); a run_as run gets only the few variables that say
    how to find programs and speak, and its user's HOME, USER and LOGNAME."""
    environ = plan.agent.environ
    if run_as is None:
        env = without_store(environ)
    else:
        env = {
            k: v
            for k, v in environ.items()
            if k in runas.INHERITED or k.startswith(runas.INHERITED_PREFIXES)
        }
        env.update(runas.environment(run_as))
    env.update(_run_env(plan, own_env))
    if plan.cache is not None and plan.cache.kind == "bind":
        env.update(dict.fromkeys(CACHE_ENV, plan.cache.source))
    env.update(gpus.process_env(plan.run))  # its own GPUs only, over any env it set
    # The run sees the agent's Python first, as if its virtualenv were active.
    bindir = plan.agent.python_bindir
    path = env.get("PATH", "")
    if bindir and bindir not in path.split(os.pathsep):
        env["PATH"] = bindir + os.pathsep + path
    return env


def container_env(plan: Plan, own_env: dict[str, str]) -> dict[str, str]:
    env = _run_env(plan, own_env)
    if plan.cache is not None:
        env.update(dict.fromkeys(CACHE_ENV, plan.cache.target))
    return env
