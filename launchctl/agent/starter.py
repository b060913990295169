"""Turn a claimed run into a started one: working copy, image, environment, runner.

Runs in a worker thread of the agent (a build can take minutes; the loop must keep
reaping, renewing leases and passing on cancels meanwhile), with its own store
connection.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launchctl import gpus, macros, names, paths, runas, runners
from launchctl.agent import workspace
from launchctl.errors import LaunchctlError, stage_of
from launchctl.masking import Masker
from launchctl.resolve import resolve
from launchctl.runenv import env_from_option, run_environment
from launchctl.runners import CacheMount, Handle, Launch, RunnerError
from launchctl.secrets import SecretStore, is_secret_ref, secret_refs
from launchctl.states import State, move
from launchctl.store import Row, Store

CACHE_TARGET = "/launchctl-cache"
CACHE_ENV = ("WANDB_CACHE_DIR", "WANDB_ARTIFACT_DIR", "LAUNCHCTL_CACHE_DIR")


# The only LAUNCHCTL_ variables a run is given: the others (LAUNCHCTL_HOME above all) stay
# with the agent, so that a run cannot learn from its environment where the store is.
RUN_VARIABLES = frozenset({"LAUNCHCTL_RUN_ID", "LAUNCHCTL_CACHE_DIR"})


def without_store(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without launchctl's own settings: ``LAUNCHCTL_HOME``, ``LAUNCHCTL_USER``..."""
    return {k: v for k, v in env.items() if not k.startswith("LAUNCHCTL_") or k in RUN_VARIABLES}


@dataclass
class Started:
    handle: Handle
    max_run_time: float | None  # seconds; the agent stops the run past it


class Cancelled(Exception):
    """The run was cancelled before it could start."""


@dataclass
class StartContext:
    agent_id: str
    env: dict[str, str]  # the agent config's env
    builder: dict[str, Any]  # the agent config's builder section
    registry: Any  # the agent config's registry
    on_exit: Callable[[], None]
    progress: bool = False


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def accelerator_base_image(*builders: Any) -> str | None:
    """``builder.accelerator.base_image`` (or the older ``builder.cuda.base_image``)."""
    for builder in builders:
        image = _dig(builder, "accelerator", "base_image") or _dig(builder, "cuda", "base_image")
        if image:
            return str(image)
    return None


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


def _build_network(builder: dict[str, Any]) -> str | None:
    """``builder.network`` of the queue's (or the agent's) config, checked again here: the
    engine's default bridge unless it says host (or none)."""
    from launchctl.buildconfig import check_network

    return check_network(builder.get("network"), "the queue's config")


def with_credentials(builder: Any, registry: Any, secrets: list[str]) -> tuple[Any, Any]:
    """``builder`` and ``registry`` with their secret references (a registry password, a
    package index URL) filled in; the values join ``secrets``, masked in all the run's output
    and errors. A missing secret fails the run at stage agent, naming it."""
    from launchctl.buildconfig import resolve

    builder, registry, masks = resolve(builder, registry)
    secrets.extend(m for m in masks if m not in secrets)
    return builder, registry


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


def secret_values(run: Row, resource_args: Mapping[str, Any]) -> dict[str, str]:
    """The values of the secrets the run's env refers to, by name; read at run start.

    Only a queue's config may refer to secrets (``launch`` refuses them in a run's own
    resource args); a run row whose own env refers to one anyway was edited by hand, and
    is refused. A missing secret or an unsafe secrets file fails the run at stage agent,
    naming the secret, never a value.
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
        return {}
    # A MissingSecret, an UnsafeSecretsFile, a malformed reference: fails at stage agent.
    names = secret_refs(env)
    return SecretStore().get_many(names) if names else {}


def env_with_secrets(value: Any, secrets: Mapping[str, str]) -> dict[str, str]:
    """``env`` from resource args, its secret references replaced by their values."""
    if not isinstance(value, dict):
        return env_from_option(value)
    env: dict[str, str] = {}
    for key, item in value.items():
        env[str(key)] = secrets[item["secret"]] if is_secret_ref(item) else str(item)
    return env


@contextlib.contextmanager
def masked_errors(values: list[str]) -> Iterator[None]:
    """An error raised inside reaches the run record with ``values`` (filled in meanwhile,
    once the secrets are read) replaced by ``***``: a runner's message can quote the env."""
    try:
        yield
    except Cancelled:
        raise
    except Exception as exc:
        if not values:
            raise
        raise _masked(exc, Masker(values)) from None


def _masked(exc: Exception, masker: Masker) -> RunnerError:
    """``exc`` as the RunnerError the agent would record for it (at the same stage), with
    the values masked."""
    if isinstance(exc, LaunchctlError):
        return RunnerError(masker.mask_text(str(exc)), stage=stage_of(exc))
    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return RunnerError(f"internal error: {masker.mask_text(detail)}", stage="agent")


class Starter:
    def __init__(self, store: Store, ctx: StartContext) -> None:
        self.store = store
        self.ctx = ctx

    def start(self, run: Row) -> Started:
        """Check, lay out, build if needed, and start ``run``; returns the runner's handle."""
        secrets: list[str] = []  # filled in once read; every error after that is masked
        with masked_errors(secrets):
            return self._start(run, secrets)

    def _start(self, run: Row, secrets: list[str]) -> Started:
        run_id = run["id"]
        version = (
            self.store.jobs.version_by_id(run["job_version_id"])
            if run["job_version_id"] is not None
            else None
        )
        overrides = run["spec"].get("overrides") or {}
        entrypoint = list(
            overrides.get("entry_point") or (version["entrypoint"] if version else [])
        )
        args = list(overrides.get("args") or [])
        queue = self.store.queues.by_id(run["queue_id"]) if run["queue_id"] is not None else None
        if run["queue_id"] is not None and queue is None:
            raise RunnerError(f"queue '{run['queue_name']}' no longer exists", stage="agent")
        # The agent is where the rules are enforced: check the launcher and values again.
        unknown: set[str] = set()
        try:
            names.check_run_names(run)  # they feed macros, and macros can make host paths
            if queue is not None:
                from launchctl import teams

                teams.check_launch(self.store, queue, run["spec"], run["spec"].get("author"))
            if version is not None:  # written by a member of the run's entities, now
                from launchctl import jobs

                jobs.check_version_author(
                    self.store, version, run_entity=run["entity"], queue=queue
                )
            # Macros expand in the admin's text only, with the template values in one pass;
            # ${image_uri} waits for the build (see below).
            resolved = resolve(queue, run["spec"], run["resource"], self._macros(run, unknown))
            gpus.check_given(run, resolved.limits.gpus)
        except LaunchctlError as exc:
            raise RunnerError(f"the run breaks its queue's rules: {exc}", stage="agent") from None
        # Secrets are read before anything slow (a build), so a missing one fails at once.
        by_name = secret_values(run, resolved.resource_args)
        secrets.extend(dict.fromkeys(by_name.values()))
        qconfig = {k: v for k, v in resolved.config.items() if k != "resource_args"}
        run_as = self._run_as(run, queue)
        folder = self._run_folder(run_id, run_as)
        workdir = folder / "code"
        cache = cache_mount(qconfig.get("artifact_cache"))
        _, registry_config = with_credentials(
            None, qconfig.get("registry") or self.ctx.registry, secrets
        )
        registry, auth = registry_settings(registry_config)
        launch = Launch(
            run=run, entrypoint=entrypoint, args=args, env={}, workdir=workdir,
            log_path=folder / "output.log", resource_args=resolved.resource_args, cache=cache,
            registry_auth=auth, agent_id=self.ctx.agent_id, on_exit=self.ctx.on_exit,
            limits=resolved.limits, secrets=secrets,
        )  # fmt: skip
        launch.devices = gpus.launch_devices(run)
        notes: list[str] = []
        if run["resource"] == "local-process":
            if not launch.command:
                raise RunnerError("the run has no entry point to execute", stage="agent")
            notes.append(workspace.prepare(self.store, run, version, workdir))
            if run_as is not None:
                runas.hand_over(workdir, run_as)
                launch.run_as = run_as
                notes.append(f"runs as user {run_as.name}")
        else:
            launch.image = self._image(run, version, launch, qconfig, registry, notes)
        # Rendered again now that ${image_uri} is the image this run uses.
        images = self._macros(run, unknown, launch.image)
        launch.resource_args = resolve(queue, run["spec"], run["resource"], images).resource_args
        for name in sorted(unknown):
            self.store.runs.note(run_id, f"warning: unknown macro ${{{name}}} left as written")
        own_env = env_with_secrets(launch.resource_args.get("env"), by_name)
        if run["resource"] == "local-process":
            launch.env = self._process_env(run, own_env, cache, run_as)
        else:
            launch.env = self._container_env(run, own_env, cache)
        self._check_cancel(run_id)
        move(self.store, run_id, State.STARTING, agent_id=self.ctx.agent_id,
             message="; ".join(notes) or None, workdir=str(workdir),
             log_path=str(launch.log_path), image=launch.image,
             expect=frozenset({State.CLAIMED, State.BUILDING}))  # fmt: skip
        handle = runners.get(run["resource"]).start(launch)
        pid = handle.pid
        move(self.store, run_id, State.RUNNING, agent_id=self.ctx.agent_id,
             message=f"pid {pid}" if pid else getattr(handle, "container_id", None),
             pid=pid, pid_started=handle.pid_started, started_at=time.time(),
             expect=frozenset({State.STARTING}))  # fmt: skip
        return Started(handle, launch.limits.max_run_time)

    def _macros(self, run: Row, unknown: set[str], image: str | None = None) -> macros.Macros:
        """The run's macros: built-ins, then the agent's environment (its config's env
        over the process's); ``image_uri`` is left for later until the image is known."""
        return macros.Macros(
            macros.builtins_for(run, image),
            {**os.environ, **self.ctx.env},
            unknown,
            pending=frozenset() if image else frozenset({"image_uri"}),
        )

    def _run_as(self, run: Row, queue: Row | None) -> runas.RunAs | None:
        """The user the queue's runs run as (``run_as``, as its admin wrote it), checked here."""
        value = ((queue or {}).get("config") or {}).get("run_as")
        if value is None:
            return None
        if run["resource"] != "local-process":
            raise RunnerError(
                f"queue {run['queue_name']}: run_as applies to local-process runs only",
                stage="agent",
            )
        return runas.for_run(value, str(run["queue_name"]))

    def _run_folder(self, run_id: str, run_as: runas.RunAs | None) -> Path:
        """The run's folder and its (empty) log, private like the rest of the store.

        ``runs/`` may be searched by anyone (never listed): a run_as run must reach its own
        folder, which is then searchable too; everything in them stays 0600 / 0700.
        """
        folder = self.store.run_dir(run_id)
        try:
            paths.make_dir(folder.parent, paths.dir_mode() | 0o111)
            paths.make_dir(folder)
            if run_as is not None:
                folder.chmod(stat.S_IMODE(folder.stat().st_mode) | 0o111)
                runas.check_reachable(folder, run_as)
            paths.make_file(folder / "output.log")
        except OSError as exc:
            raise RunnerError(
                f"cannot make the run's folder {folder}: {exc.strerror or exc}", stage="agent"
            ) from None
        return folder

    def _check_cancel(self, run_id: str) -> None:
        if self.store.runs.get(run_id)["cancel_requested"]:
            raise Cancelled(run_id)

    def _run_env(self, run: Row, own_env: dict[str, str]) -> dict[str, str]:
        env = without_store(self.ctx.env)
        env.update(own_env)  # resource_args env, its secrets filled in
        env.update(run_environment(run))
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _process_env(
        self,
        run: Row,
        own_env: dict[str, str],
        cache: CacheMount | None,
        run_as: runas.RunAs | None = None,
    ) -> dict[str, str]:
        """The agent's environment without what names the store (``LAUNCHCTL_HOME`` and the
        rest of launchctl's own settings); a run_as run gets only the few variables that say
        how to find programs and speak, and its user's HOME, USER and LOGNAME."""
        if run_as is None:
            env = without_store(os.environ)
        else:
            env = {
                k: v
                for k, v in os.environ.items()
                if k in runas.INHERITED or k.startswith(runas.INHERITED_PREFIXES)
            }
            env.update(runas.environment(run_as))
        env.update(self._run_env(run, own_env))
        if cache is not None and cache.kind == "bind":
            env.update(dict.fromkeys(CACHE_ENV, cache.source))
        env.update(gpus.process_env(run))  # its own GPUs only, over any env it set
        # The run sees the agent's Python first, as if its virtualenv were active.
        bindir = os.path.dirname(sys.executable)
        if bindir not in env.get("PATH", "").split(os.pathsep):
            env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
        return env

    def _container_env(
        self, run: Row, own_env: dict[str, str], cache: CacheMount | None
    ) -> dict[str, str]:
        env = self._run_env(run, own_env)
        if cache is not None:
            env.update(dict.fromkeys(CACHE_ENV, cache.target))
        return env

    def _image(
        self,
        run: Row,
        version: Row | None,
        launch: Launch,
        qconfig: dict[str, Any],
        registry: str | None,
        notes: list[str],
    ) -> str:
        """The image to run: given (-d, image job) as it is, or built from the job's code."""
        given = _dig(run["spec"], "docker", "docker_image")
        if not given and version is not None and version["source_type"] == "image":
            given = version["source"]["image"]
        if given:
            return str(given)
        if version is None:
            raise RunnerError("the run names no image and no job to build", stage="agent")
        move(self.store, run["id"], State.BUILDING, agent_id=self.ctx.agent_id,
             expect=frozenset({State.CLAIMED}))  # fmt: skip
        notes.append(workspace.prepare(self.store, run, version, launch.workdir))
        from launchctl.build import BuildRequest, ensure_image

        builder = {**self.ctx.builder, **(qconfig.get("builder") or {})}
        if run["queue_id"] is None:  # a direct launch: its own launch spec may say how to build
            builder.update(_dig(run["spec"], "builder") or {})
        builder, _ = with_credentials(builder, None, launch.secrets)  # the index's secrets
        base = accelerator_base_image(
            launch.resource_args.get("builder"), _dig(run["spec"], "builder"),
            qconfig.get("builder"), self.ctx.builder,
        )  # fmt: skip
        overrides = run["spec"].get("overrides") or {}
        request = BuildRequest(
            job_name=version["name"],
            source_dir=launch.workdir,
            entrypoint=launch.entrypoint,
            dockerfile=overrides.get("dockerfile") or version.get("dockerfile"),
            base_image=base,
            registry=registry,
            registry_auth=launch.registry_auth,
            index_url=builder.get("index_url"),
            extra_index_urls=list(builder.get("extra_index_urls") or []),
            find_links=list(builder.get("find_links") or []),
            build_args={str(k): str(v) for k, v in (builder.get("build_args") or {}).items()},
            template_dir=Path(builder["template_dir"]) if builder.get("template_dir") else None,
            network=_build_network(builder),
        )
        if builder.get("base_image"):
            request.default_base_image = str(builder["base_image"])
        try:
            with open(launch.log_path, "ab", buffering=0) as log:
                for entry in version["source"].get("special") or []:  # what job create did
                    log.write(
                        f"launchctl: job file {entry['path']}: {entry['what']}:"
                        f" {entry['action']} (at job create)\n".encode()
                    )
                built = ensure_image(request, log.write, progress=self.ctx.progress)
        except LaunchctlError as exc:  # a BuildError, an engine that does not answer...
            raise RunnerError(str(exc), stage="build") from None
        what = "built" if built.built else "reused"
        notes.append(f"image {built.uri} {what} ({built.dockerfile_source})")
        return built.uri
