"""Launch: turn W&B-style flags and launch specs into a stored run."""

from __future__ import annotations

import copy
import json
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from launchctl import gpus, identity, jobs, names
from launchctl.configfile import load_mapping
from launchctl.errors import ConfigError, LaunchctlError, UsageError
from launchctl.priority import DEFAULT_PRIORITY, PRIORITIES, PRIORITY_NAMES
from launchctl.queues import check_resource, validate_resource_args
from launchctl.resolve import resolve
from launchctl.store import Row, Store

DEFAULT_RESOURCE = "local-process"
# Keys a launch spec (-c) may hold, in W&B's names (W&B: utils.construct_launch_spec and
# LaunchProject.from_launch_spec in wandb/sdk/launch/_project_spec.py), plus queue and priority.
SPEC_KEYS = frozenset(
    {"uri", "job", "entry_point", "docker", "resource", "resource_args", "overrides", "name",
     "project", "entity", "priority", "queue", "builder", "registry", "template_variables",
     "git", "author", "run_id", "sweep_id", "additional_services"}
)  # fmt: skip
# Keys W&B's spec holds that mean nothing here: accepted, said once on stderr, not stored.
UNUSED_SPEC_KEYS = {
    "run_id": "launchctl gives each run a new id (W&B uses it to resume a run on its server)",
    "sweep_id": "launchctl has no sweeps",
    "additional_services": "it starts side containers on Kubernetes, which this build does not run",
}
OVERRIDE_KEYS = frozenset({"args", "run_config", "entry_point", "dockerfile", "artifacts", "files"})
UNUSED_OVERRIDE_KEYS = {
    "artifacts": "launchctl has no W&B artifacts to swap",
    "files": "launchctl has no W&B run files to swap",
}
GIT_KEYS = frozenset({"version", "repo", "commit"})
# Where the flags for the job a -u launch creates travel to submit; never stored.
CREATE_KEY = "_create"
# Where prepare_spec leaves --delay/--at/--after* for build_run (never stored in the spec).
WORKFLOW_KEY = "_workflow"
_ALPHABET = string.ascii_lowercase + string.digits


def new_run_id() -> str:
    """An 8-character id like W&B's run ids."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(8))


MAX_DEPTH = 32


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def _not_a_constant(name: str) -> Any:
    raise ValueError(name)


def parse_set(pairs: list[str], flag: str = "--set") -> dict[str, Any]:
    """``key=value`` pairs; a value that parses as JSON is typed (``lr=0.5`` is a float)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, eq, raw = pair.partition("=")
        key = key.strip()
        if not eq or not key:
            raise UsageError(f"{flag} expects key=value, got {pair!r}")
        try:
            # NaN and Infinity are not JSON that other tools read: keep them as text.
            value: Any = json.loads(raw, parse_constant=_not_a_constant)
        except (ValueError, RecursionError):
            value = raw
        if _depth(value) > MAX_DEPTH:
            raise UsageError(f"{flag} {key}: the value is nested over {MAX_DEPTH} levels deep")
        out[key] = value
    return out


def parse_set_vars(pairs: list[str]) -> dict[str, str]:
    """``--set-var`` values as W&B reads them (utils.fetch_and_validate_template_variables):
    exactly one ``=`` per flag, the name as written, the value as text (the queue's field
    type converts it). A later flag for the same name wins."""
    out: dict[str, str] = {}
    for pair in pairs:
        parts = pair.split("=")
        if len(parts) != 2 or not parts[0]:
            raise UsageError(
                f"--set-var expects key=value, one '=' per flag (e.g. --set-var key1=value1),"
                f" got {pair!r:.80}"
            )
        out[parts[0]] = parts[1]
    return out


def parse_priority(value: str | int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and value in PRIORITY_NAMES:
        return value
    key = str(value).lower()
    if key not in PRIORITIES:
        raise UsageError(f"invalid priority {value!r}: choose one of {', '.join(PRIORITIES)}")
    return PRIORITIES[key]


@dataclass
class LaunchRequest:
    """What the user asked for, in W&B's flag names."""

    uri: str | None = None
    job: str | None = None
    entry_point: str | None = None
    docker_image: str | None = None
    queue: str | None = None
    config: str | None = None
    resource_args: str | None = None
    resource: str | None = None
    dockerfile: str | None = None
    priority: str | None = None
    project: str | None = None
    entity: str | None = None
    name: str | None = None
    sets: list[str] = field(default_factory=list)
    args: str | None = None
    set_vars: list[str] = field(default_factory=list)
    # For the job a -u launch creates (W&B: launch --job-name, -g, --build-context, -B).
    job_name: str | None = None
    git_version: str | None = None
    build_context: str | None = None
    base_image: str | None = None
    # When the queued run may be claimed (issue 18; launchctl.workflow): --delay or --at,
    # and the runs it waits for (--after, --after-ok, --after-fail).
    delay: str | None = None
    at: str | None = None
    after: list[str] = field(default_factory=list)
    after_ok: list[str] = field(default_factory=list)
    after_fail: list[str] = field(default_factory=list)


def _stderr(line: str) -> None:
    import sys

    print(line, file=sys.stderr, flush=True)


def _check_git(spec: dict[str, Any], say: Callable[[str], None]) -> None:
    """W&B's ``git`` object: ``version`` (a commit, branch or tag for a git ``-u``); the
    older ``commit`` is read the same way; ``repo`` is said and dropped (``-u`` names it)."""
    git = spec.get("git")
    if git is None:
        return
    if not isinstance(git, dict):
        raise ConfigError("launch config (-c): git must be an object")
    bad = sorted(set(git) - GIT_KEYS)
    if bad:
        raise ConfigError(
            f"launch config (-c): unknown key git.{bad[0]} (allowed: {', '.join(sorted(GIT_KEYS))})"
        )
    for key, value in git.items():
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"launch config (-c): git.{key} must be a string")
    if "repo" in git:
        git.pop("repo")
        say("note: launch config (-c): git.repo is accepted but not used here: -u names the repo")


def _merge_config(req: LaunchRequest, say: Callable[[str], None]) -> dict[str, Any]:
    """Start from the ``-c`` launch spec; flags given on the command line win."""
    spec: dict[str, Any] = {}
    if req.config:
        spec = copy.deepcopy(load_mapping(req.config, "launch config (-c)"))
        unknown = sorted(set(spec) - SPEC_KEYS)
        if unknown:
            raise ConfigError(
                f"launch config (-c): unknown key {unknown[0]!r}"
                f" (allowed: {', '.join(sorted(SPEC_KEYS))})"
            )
        for key, why in UNUSED_SPEC_KEYS.items():
            if key in spec:
                spec.pop(key)
                say(f"note: launch config (-c): {key} is accepted but not used here: {why}")
        overrides = spec.get("overrides", {})
        if not isinstance(overrides, dict):
            raise ConfigError("launch config (-c): overrides must be an object")
        bad = sorted(set(overrides) - OVERRIDE_KEYS)
        if bad:
            raise ConfigError(
                f"launch config (-c): unknown override {bad[0]!r}"
                f" (allowed: {', '.join(sorted(OVERRIDE_KEYS))})"
            )
        for key, why in UNUSED_OVERRIDE_KEYS.items():
            if key in overrides:
                overrides.pop(key)
                say(f"note: launch config (-c): overrides.{key} is accepted but not used: {why}")
        for key in ("uri", "job", "name", "project", "entity", "resource", "queue"):
            if key in spec and spec[key] is not None and not isinstance(spec[key], str):
                raise ConfigError(f"launch config (-c): {key} must be a string")
        if "run_config" in overrides and not isinstance(overrides["run_config"], dict):
            raise ConfigError("launch config (-c): overrides.run_config must be an object")
        if "args" in overrides and not (
            isinstance(overrides["args"], list)
            and all(isinstance(a, str) for a in overrides["args"])
        ):
            raise ConfigError("launch config (-c): overrides.args must be a list of strings")
        _check_git(spec, say)
    docker = spec.get("docker") or {}
    if not isinstance(docker, dict):
        raise ConfigError("launch config (-c): docker must be an object")
    if docker.get("docker_image") is not None and not isinstance(docker["docker_image"], str):
        raise ConfigError("launch config (-c): docker.docker_image must be a string")
    simple = {
        "uri": req.uri, "job": req.job, "name": req.name, "project": req.project,
        "entity": req.entity, "resource": req.resource, "queue": req.queue,
    }  # fmt: skip
    for key, value in simple.items():
        if value is not None:
            spec[key] = value
    if req.docker_image is not None:
        docker["docker_image"] = req.docker_image
    if docker:
        spec["docker"] = docker
    if req.priority is not None:
        spec["priority"] = req.priority
    if req.git_version is not None:  # W&B's construct_launch_spec: git.version
        spec["git"] = {**(spec.get("git") or {}), "version": req.git_version}
    create = {"name": req.job_name, "build_context": req.build_context,
              "base_image": req.base_image}  # fmt: skip
    if any(v is not None for v in create.values()):
        spec[CREATE_KEY] = {k: v for k, v in create.items() if v is not None}
    overrides = spec.setdefault("overrides", {})
    if req.entry_point is not None:
        overrides["entry_point"] = jobs.parse_entrypoint(req.entry_point)
    elif "entry_point" in overrides or "entry_point" in spec:
        overrides["entry_point"] = jobs.parse_entrypoint(
            overrides.get("entry_point", spec.pop("entry_point", None))
        )
    if req.dockerfile is not None:
        overrides["dockerfile"] = req.dockerfile
    if req.sets:
        run_config = overrides.setdefault("run_config", {})
        run_config.update(parse_set(req.sets))
    if req.args:
        import shlex

        try:
            extra = shlex.split(req.args)
        except ValueError as exc:
            raise UsageError(f"cannot parse --args {req.args!r}: {exc}") from None
        overrides["args"] = [*overrides.get("args", []), *extra]
    if req.resource_args is not None:
        spec["resource_args"] = load_mapping(req.resource_args, "resource args (-R)")
    if req.set_vars:  # W&B's _launch_add: the flags' values over the spec's
        given = spec.get("template_variables")
        if given is None:
            given = {}
        if not isinstance(given, dict):
            raise UsageError("template_variables must be an object of name: value")
        spec["template_variables"] = {**given, **parse_set_vars(req.set_vars)}
    if spec.get("resource_args") and spec.get("template_variables"):
        # W&B's utils.strip_resource_args_and_template_vars: template_variables win.
        spec.pop("resource_args")
        say(
            "warning: the launch holds both resource_args and template_variables; only one"
            " can be set: using template_variables, resource_args dropped (as W&B does)"
        )
    if "resource_args" in spec:
        validate_resource_args(spec["resource_args"], where="resource args")
    return spec


def _check_combination(spec: dict[str, Any]) -> None:
    for key, flag in (("queue", "--queue (-q)"), ("job", "--job (-j)"), ("uri", "--uri (-u)"),
                      ("name", "--name"), ("project", "--project (-p)"),
                      ("entity", "--entity (-e)")):  # fmt: skip
        if key in spec and isinstance(spec[key], str) and not spec[key].strip():
            raise UsageError(f"{flag} needs a value; it was given an empty one")
    image = (spec.get("docker") or {}).get("docker_image")
    if spec.get("job") and image:
        raise UsageError("cannot use both --job (-j) and --docker-image (-d): pick one")
    if spec.get("uri") and spec.get("job"):
        raise UsageError("cannot use both --uri (-u) and --job (-j): pick one")
    if spec.get("uri") and image:
        raise UsageError("cannot use both --uri (-u) and --docker-image (-d): pick one")
    if spec.get("priority") is not None and not spec.get("queue"):
        raise UsageError("--priority (-P) needs --queue (-q): direct launches are not queued")
    if spec.get("uri") and not spec["overrides"].get("entry_point"):
        raise UsageError("--uri (-u) needs --entry-point (-E), e.g. -E 'python train.py'")
    if not (spec.get("uri") or spec.get("job") or image):
        raise UsageError("nothing to launch: pass --uri (-u), --job (-j) or --docker-image (-d)")
    create = spec.get(CREATE_KEY) or {}
    if "base_image" in create and image:
        raise UsageError("cannot use both --base-image (-B) and --docker-image (-d): pick one")
    flags = {"name": "--job-name (-J)", "build_context": "--build-context",
             "base_image": "--base-image (-B)"}  # fmt: skip
    for key, flag in flags.items():
        if key in create and not spec.get("uri"):
            raise UsageError(f"{flag} names the job that --uri (-u) creates: it needs -u")
        if key in create and not str(create[key]).strip():
            raise UsageError(f"{flag} needs a value; it was given an empty one")


def _default_name(base: str, run_id: str) -> str:
    """``JOB-abcd`` (or ``IMAGE-abcd``); ``run-abcd`` where that would not be a valid name."""
    try:
        return names.check_run_name(f"{base}-{run_id[:4]}")
    except names.InvalidName:
        return f"run-{run_id[:4]}"


def _names_image(store: Store, spec: dict[str, Any]) -> bool:
    """Whether the spec runs a prebuilt image: ``-d`` or an image job."""
    if (spec.get("docker") or {}).get("docker_image"):
        return True
    if spec.get("job") and not spec.get("uri"):
        return bool(_find_job(store, spec, None)["source_type"] == "image")
    return False


def _find_job(store: Store, spec: dict[str, Any], queue: Row | None) -> Row:
    """The version ``-j`` names. A bare NAME is a job of the run's entity: ``-e``, else
    the queue's entity, else the launcher's own; ``ENTITY/NAME`` names another."""
    entity = spec.get("entity") or (queue["entity"] if queue else identity.default_entity())
    return jobs.find_version(store, spec["job"], entity=str(entity))


def _resolve_job(
    store: Store,
    spec: dict[str, Any],
    queue: Row | None,
    create: dict[str, Any],
    say: Callable[[str], None] = _stderr,
) -> Row | None:
    """Find or create the job version the spec names (None for a bare image).

    ``-u`` snapshots the launcher's code as a job of their own entity (``-e`` names the
    run's entity, not the job's), after checking that they may run in the run's entities.
    ``create`` holds W&B's ``--job-name``, ``--build-context`` and ``--base-image``; a git
    ``-u`` is taken at ``git.version`` (``-g``).

    ``-E`` is this run's entry point: a job that exists keeps its own (issue 12, see
    ``jobs._kept_entrypoint``); ``say`` gets one line when the launch made a new version of
    an existing job, and one when the run's entry point is not the job's.
    """
    overrides = spec["overrides"]
    if spec.get("uri"):
        uri = spec["uri"]
        entry = overrides["entry_point"]
        jobs.check_author(
            store, identity.current_user(), job=f"from {uri}", job_entity=None,
            run_entity=spec.get("entity"), queue=queue,
        )  # fmt: skip
        common: dict[str, Any] = {"project": spec.get("project"), "entity": None, **create}
        git: dict[str, Any] = spec["git"] if isinstance(spec.get("git"), dict) else {}
        commit = git.get("version") or git.get("commit")
        common["keep_job_entrypoint"] = True
        if jobs.is_git_uri(uri):
            version, created = jobs.create_git_job(
                store, uri, entrypoint=entry, commit=commit, **common
            )
        else:
            if commit:
                raise UsageError(
                    "--git-version (-g) is a git ref: it needs a git --uri (-u), not a folder"
                )
            version, created = jobs.create_code_job(
                store, uri, entrypoint=entry, dockerfile=overrides.get("dockerfile"), **common
            )
        _say_version(store, version, created, entry, say)
        return version
    if spec.get("job"):
        return _find_job(store, spec, queue)
    return None


def _say_version(
    store: Store, version: Row, created: bool, entry: list[str], say: Callable[[str], None]
) -> None:
    """What a ``-u`` launch did to its job, in one line, when it did more than reuse it."""
    import shlex

    made = jobs.new_version_line(store, version) if created else None
    if list(version["entrypoint"]) != list(entry):
        stays = (
            "-E applies to this run only; the job's entry point stays"
            f" {shlex.join(version['entrypoint'])!r} (`job create -E` changes it)"
        )
        ref = f"job {version['name']}:v{version['version']}"
        say(f"{made}; {stays}" if made else f"{ref} unchanged: {stays}")
    elif made:
        say(made)


def prepare_spec(req: LaunchRequest, say: Callable[[str], None] = _stderr) -> dict[str, Any]:
    """Merge ``-c`` and the flags into one launch spec and check the flags fit together.

    ``say`` gets the notes W&B would print: spec keys accepted but not used here, and
    resource_args dropped for template_variables."""
    spec = _merge_config(req, say)
    _check_combination(spec)
    from launchctl import workflow

    when = workflow.start_time(req.delay, req.at)
    after = workflow.parse_after(req.after, req.after_ok, req.after_fail)
    workflow.check_launch_flags(
        queued=bool(spec.get("queue")), remote=False, when=when, after=bool(after)
    )
    if when is not None or after:
        spec[WORKFLOW_KEY] = {"not_before": when, "after": after}
    if req.base_image is not None:
        from launchctl.imageref import check_image_ref

        check_image_ref(req.base_image, "--base-image (-B)")
    try:
        json.dumps(spec, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError("the launch holds characters that are not valid UTF-8") from None
    except ValueError:
        raise UsageError("the launch holds a number JSON cannot store (NaN or infinity)") from None
    return spec


def submit(
    store: Store,
    spec: dict[str, Any],
    *,
    claim_for: str | None = None,
    lease_s: float = 60.0,
    say: Callable[[str], None] = _stderr,
) -> Row:
    """Store a launch spec as a run. Nothing is written when this raises.

    ``say`` gets one line when a ``-u`` launch made a new version of an existing job.

    A spec without a queue is a direct launch: it must be claimed at once by the
    embedded agent ``claim_for``, so no other agent can take it.
    """
    run = build_run(store, spec, direct_ok=claim_for is not None, say=say)
    return store.runs.insert(run, claim_for=claim_for, lease_s=lease_s)


def _check_values(
    store: Store, queue: Row | None, spec: dict[str, Any], resource: str, user: str | None = None
) -> None:
    """The launcher's role in ``queue``, the template values and the guardrails, checked
    as a launch checks them (``user``: whose launch it is, default the current user); the
    spec's ``template_variables`` become the values the queue's fields made of them."""
    from launchctl.buildconfig import check_spec_images

    if queue is not None:
        from launchctl import teams

        teams.check_launch(store, queue, spec, user)
    # Template values and guardrails, checked now so that nothing bad is queued.
    resolved = resolve(queue, spec, resource)
    # A queue's base image may be a {{field}}: its value, filled in, is an image reference too.
    check_spec_images(resolved.config, "the queue's config with this launch's values")
    gpus.check_machine_fits(store, resolved.limits.gpus)
    given = spec.get("template_variables") or {}
    if given:
        spec["template_variables"] = {name: resolved.values[name] for name in given}


def build_run(
    store: Store,
    spec: dict[str, Any],
    *,
    direct_ok: bool = False,
    say: Callable[[str], None] = _stderr,
) -> dict[str, Any]:
    """The run row a launch spec makes, checked as ``submit`` checks it (queue, template
    values, guardrails, roles, GPUs, the job), not yet written: a caller that writes it in
    a transaction of its own (a sweep's trial with its run) inserts it. Only a ``-u``
    launch writes here (its job's new version). ``direct_ok``: a spec without a queue may
    be built (an embedded agent claims it)."""
    spec = copy.deepcopy(spec)
    create = spec.pop(CREATE_KEY, None) or {}
    flow = spec.pop(WORKFLOW_KEY, None) or {}
    if not spec.get("queue") and not direct_ok:
        raise UsageError("a direct launch (no --queue) needs an agent to claim it")
    extra: dict[str, Any] = {}
    if flow:  # issue 18: checked before a -u launch writes its job's version
        from launchctl import workflow

        deps = workflow.resolve_deps(store, flow.get("after") or [], identity.current_user())
        extra = workflow.as_fields(flow.get("not_before"), deps)
    names.check_run_names(spec)  # before anything is written: a code dir's job is written
    from launchctl.buildconfig import check_spec_images

    check_spec_images(spec, "launch spec")  # its base images are image references (issue 11)
    queue = store.queues.get(spec["queue"]) if spec.get("queue") else None
    priority = parse_priority(spec.get("priority"))
    if queue is not None:
        if spec.get("resource") and spec["resource"] != queue["resource"]:
            raise UsageError(
                f"queue '{queue['name']}' runs {queue['resource']};"
                f" --resource {spec['resource']} does not match"
            )
        resource = queue["resource"]
    elif spec.get("resource"):
        resource = check_resource(spec["resource"])
    else:
        # A direct launch of an image runs it in a container, as W&B's does.
        resource = "local-container" if _names_image(store, spec) else DEFAULT_RESOURCE
    _check_values(store, queue, spec, resource)
    image = (spec.get("docker") or {}).get("docker_image")
    version = _resolve_job(store, spec, queue, create, say)
    runs_image = image or (version is not None and version["source_type"] == "image")
    if resource == "local-process" and runs_image:
        where = f"queue '{queue['name']}'" if queue else "a direct launch"
        raise UsageError(
            f"{where} runs local processes and cannot run a docker image;"
            " use a local-container queue (-q) or resource (-r)"
        )
    entry = spec["overrides"].get("entry_point") or (version["entrypoint"] if version else [])
    if resource == "local-process" and not entry:
        raise UsageError("nothing to run: the job has no entry point; pass -E")
    if version is not None:
        spec["job"] = jobs.version_ref(version)
        spec.pop("uri", None)
    project = spec.get("project") or (version["project"] if version else jobs.DEFAULT_PROJECT)
    entity = spec.get("entity") or (version["entity"] if version else identity.default_entity())
    if version is not None:  # its author must be one of the run's entities
        jobs.check_version_author(store, version, run_entity=entity, queue=queue)
    run_id = new_run_id()
    base = version["name"] if version else (image or "run").rsplit("/", 1)[-1].split(":")[0]
    name = spec.get("name") or _default_name(base, run_id)
    spec.update(project=project, entity=entity, resource=resource, name=name)
    names.check_run_names(spec)  # a job's project and entity, a default entity: one rule
    spec["author"] = identity.current_user()
    if priority is None:
        spec.pop("priority", None)
    else:
        spec["priority"] = PRIORITY_NAMES[priority]
    return {
        "id": run_id,
        "queue_id": queue["id"] if queue else None,
        "queue_name": queue["name"] if queue else None,
        "job_version_id": version["id"] if version else None,
        "name": name,
        "project": project,
        "entity": entity,
        "resource": resource,
        "spec": spec,
        "priority": DEFAULT_PRIORITY if priority is None else priority,
        **extra,
    }


# -- launch --async: a direct launch that does not wait ------------------------------------
# The states a run passes through before its process runs.
NOT_YET_RUNNING = frozenset({"claimed", "building", "starting"})


# The detached agent runs the launchctl this process runs: the single file (issue 17)
# unpacks it into a folder that is not on the interpreter's path, so the child puts that
# folder first when it is missing there (for a pip install it is there already).
_DETACHED = (
    "import runpy, sys\n"
    "root = sys.argv.pop(1)\n"
    "if root not in sys.path:\n"
    "    sys.path.insert(0, root)\n"
    "runpy.run_module('launchctl.cli.launch', run_name='__main__', alter_sys=True)\n"
)


def start_detached(store: Store, spec: dict[str, Any]) -> tuple[Row, Any]:
    """Store a direct launch claimed for a detached agent process and start that process
    (module ``launchctl.cli.launch`` with RUN AGENT, in its own session so that the terminal's
    Ctrl-C does not reach it). It builds, starts and follows the run and records how it
    ended, then exits. Returns the run and the process."""
    import os
    import socket
    import subprocess
    import sys

    agent_id = f"{socket.gethostname()}-async-{os.getpid()}-{os.urandom(2).hex()}"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # holds launchctl/
    run = submit(store, spec, claim_for=agent_id, lease_s=120.0)
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", _DETACHED, root, run["id"], agent_id],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        _fail_unstarted(store, run, f"could not start its agent: {exc}")
        raise LaunchctlError(f"run {run['id']} failed: could not start its agent: {exc}") from None
    return run, child


def wait_started(store: Store, run: Row, child: Any) -> Row:
    """Wait until the detached agent's run runs (or ended); a run whose agent died before
    it ran is failed at stage ``agent``, never left held."""
    import time

    while True:
        now = store.runs.get(run["id"])
        if now["state"] not in NOT_YET_RUNNING:
            return now
        if child.poll() is not None:
            _fail_unstarted(store, run, f"its agent exited ({child.returncode}) before it ran")
            return store.runs.get(run["id"])
        time.sleep(0.05)


def _fail_unstarted(store: Store, run: Row, reason: str) -> None:
    import contextlib

    from launchctl.errors import StateConflict
    from launchctl.states import ACTIVE, State, move

    with contextlib.suppress(StateConflict):  # it moved meanwhile: that is the truth
        held_by = store.runs.get(run["id"])["agent_id"]
        move(store, run["id"], State.FAILED, agent_id=held_by, stage="agent",
             reason=reason, expect=frozenset(ACTIVE))  # fmt: skip


def serve_detached(store: Store, run_id: str, agent_id: str) -> None:
    """The detached agent of ``launch --async``: runs the one run it was handed, then exits."""
    from launchctl.agent import Agent, AgentOptions

    agent = Agent(store, [], AgentOptions(max_jobs=1), say=lambda _line: None)
    agent.id = agent_id  # the id the run was claimed for
    agent.start()
    agent.start_claimed(store.runs.get(run_id))
    agent.handle_signals(agent.interrupt)
    agent.run(burst=True)


def rerun(store: Store, run_id: str, *, sets: list[str], priority: str | None = None) -> Row:
    """Queue a new run with the same spec, with ``--set`` overrides changed.

    A direct launch has no queue of its own; its rerun goes to the ``default`` queue.
    """
    changes = parse_set(sets) if sets else {}
    prio = parse_priority(priority) if priority else None
    return store.runs.insert(_rerun_row(store, store.runs.get(run_id), changes, prio))


def rerun_row(store: Store, old: Row, sets: dict[str, Any], prio: int | None) -> dict[str, Any]:
    """The run a rerun of ``old`` makes, checked as ``rerun`` checks it, not yet written
    (``runs rerun --array`` writes a whole array of them in one transaction)."""
    return _rerun_row(store, old, sets, prio)


def default_name(base: str, run_id: str) -> str:
    """A run's name when the launch gave none (each run of an array gets its own)."""
    return _default_name(base, run_id)


def _rerun_row(store: Store, old: Row, sets: dict[str, Any], prio: int | None) -> dict[str, Any]:
    """The run a rerun of ``old`` makes, checked as ``rerun`` checks it, not yet written."""
    spec = copy.deepcopy(old["spec"])
    if sets:
        spec.setdefault("overrides", {}).setdefault("run_config", {}).update(sets)
    if old["queue_id"] is not None:
        queue = store.queues.by_id(old["queue_id"])
    elif old["queue_name"] is None:
        queue = store.queues.get("default")
    else:
        queue = None
    if queue is None:
        raise LaunchctlError(f"queue '{old['queue_name']}' of run {old['id']} no longer exists")
    from launchctl import teams

    spec["author"] = identity.current_user()
    teams.check_launch(store, queue, spec)  # the rerun is the current user's launch
    if old["job_version_id"] is not None:  # the same rule as at launch, for the new queue
        version = store.jobs.version_by_id(old["job_version_id"])
        jobs.check_version_author(store, version, run_entity=old["entity"], queue=queue)
    elif spec.get("job"):
        # `job delete --force` kept the run's record but not its code: a rerun would run
        # in an empty folder (as `launch -j` of the deleted job is refused, so is this).
        raise LaunchctlError(
            f"run {old['id']}'s job {spec['job']} was deleted (the run kept its record):"
            " launch the job again to run it"
        )
    if queue["resource"] != old["resource"]:
        raise LaunchctlError(
            f"run {old['id']} ran on {old['resource']}, but queue '{queue['name']}' runs"
            f" {queue['resource']}; launch it again with -q"
        )
    resolved = resolve(queue, spec, queue["resource"])  # its values, by today's queue rules
    from launchctl.buildconfig import check_spec_images

    check_spec_images(resolved.config, "the queue's config with this run's values")
    new_id = new_run_id()
    base = old["name"].rsplit("-", 1)[0] if "-" in old["name"] else old["name"]
    spec.update(name=f"{base}-{new_id[:4]}", queue=queue["name"])
    return {
        "id": new_id,
        "queue_id": queue["id"],
        "queue_name": queue["name"],
        "job_version_id": old["job_version_id"],
        "name": spec["name"],
        "project": old["project"],
        "entity": old["entity"],
        "resource": old["resource"],
        "spec": spec,
        "priority": old["priority"] if prio is None else prio,
        "rerun_of": old["id"],
    }


@dataclass
class FailedReruns:
    """What ``rerun --failed`` did: ``reran`` pairs each original with its rerun (None in a
    dry run), ``skipped`` each failed run left alone with why, ``others`` how many failed
    runs the user may not rerun (another user's, not an admin's)."""

    reran: list[tuple[Row, Row | None]] = field(default_factory=list)
    skipped: list[tuple[Row, str]] = field(default_factory=list)
    others: int = 0


def rerun_failed(
    store: Store,
    *,
    queue: str | None = None,
    since: str | None = None,
    sets: list[str] = (),  # type: ignore[assignment]
    priority: str | None = None,
    dry_run: bool = False,
) -> FailedReruns:
    """Rerun every failed run (of ``queue``, created ``since``), oldest first, each as
    ``runs rerun RUN`` records it. A run that already has a rerun is skipped (checked
    again in the rerun's own transaction, so two at once never rerun one run twice); so is
    one the user may not rerun: only its author, or an admin of its entity or its queue's,
    reruns a failed run in bulk, and the rerun must pass today's launch checks."""
    from launchctl import teams
    from launchctl.runs import parse_since
    from launchctl.states import State
    from launchctl.store.runs import select_runs

    changes = parse_set(list(sets)) if sets else {}
    prio = parse_priority(priority) if priority else None
    start = parse_since(since) if since is not None else None
    if queue is not None:
        store.queues.get(queue)  # a queue that does not exist is refused, not "none failed"
    failed = select_runs(store.db, queue=queue, states=[State.FAILED], since=start, limit=None)
    failed.reverse()  # oldest first: the reruns queue in the order the runs were made
    user = identity.current_user()
    done = FailedReruns()
    mine: list[Row] = []
    for old in failed:
        try:
            teams.require_canceller(store, old, user, action="rerun")
        except teams.PermissionDenied:
            done.others += 1
            continue
        mine.append(old)
    later = store.runs.reruns_of(r["id"] for r in mine)
    for old in mine:
        if old["id"] in later:
            done.skipped.append((old, f"already rerun as {later[old['id']]}"))
            continue
        try:
            row = _rerun_row(store, old, changes, prio)
        except LaunchctlError as exc:
            done.skipped.append((old, str(exc)))
            continue
        if dry_run:
            done.reran.append((old, None))
            continue
        new = store.runs.insert_first_rerun(row)
        if new is None:
            done.skipped.append((old, "already rerun (by another command just now)"))
        else:
            done.reran.append((old, new))
    return done


# -- runs edit: change a queued run (issue 18) ---------------------------------------------
_SHOWN = 40  # the longest value an edit's event shows in full
_UNSET = object()


def _same(was: Any, now: Any) -> bool:
    """Whether an edit leaves a value as it was (``1`` and ``1.0``, ``1`` and ``true`` differ)."""
    return was is not _UNSET and json.dumps(was, sort_keys=True) == json.dumps(now, sort_keys=True)


def _shown(value: Any) -> str:
    if value is _UNSET:
        return "(unset)"
    # Text a launcher typed is data: control characters are shown escaped, never sent raw.
    plain = isinstance(value, str) and value.isprintable()
    text = value if plain else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "\u2026"


def edit(
    store: Store,
    run_id: str,
    *,
    sets: list[str] = (),  # type: ignore[assignment]
    set_vars: list[str] = (),  # type: ignore[assignment]
    priority: str | None = None,
) -> tuple[Row, list[str]]:
    """Change a queued run's ``--set`` overrides, ``--set-var`` template values or priority,
    checked as a launch into its queue is (the run's author's role, the queue's template
    limits and guardrails, by today's queue rules). Only the run's author or an admin of
    its entity (or its queue's) may; the change and the check that the run is still
    queued are one transaction. Returns the run after and what changed, in words (empty:
    nothing did, nothing written); the run's events get "edited by USER: lr 0.1 -> 0.05"."""
    from launchctl import teams
    from launchctl.errors import StateConflict

    changes = parse_set(list(sets)) if sets else {}
    values = parse_set_vars(list(set_vars)) if set_vars else {}
    prio = parse_priority(priority)
    if not (changes or values or prio is not None):
        raise UsageError("nothing to edit: pass --set KEY=VALUE, --set-var NAME=VALUE or -P")
    run = store.runs.get(run_id)
    user = teams.require_canceller(store, run, action="edit")
    if run["state"] != "queued":
        raise StateConflict(f"run {run['id']} is {run['state']}: only a queued run can be edited")
    queue = store.queues.by_id(run["queue_id"]) if run["queue_id"] is not None else None
    if queue is None:
        raise StateConflict(f"run {run['id']} has no queue: only a queued run can be edited")
    old = run["spec"]
    spec = copy.deepcopy(old)
    if changes:
        spec.setdefault("overrides", {}).setdefault("run_config", {}).update(changes)
    if values:
        if spec.get("resource_args"):
            raise UsageError(
                f"run {run['id']} was launched with resource_args; a run holds those or"
                " template variables, not both (as W&B's): launch it again with --set-var"
            )
        spec["template_variables"] = {**(spec.get("template_variables") or {}), **values}
    if prio is not None:
        spec["priority"] = PRIORITY_NAMES[prio]
    author = spec.get("author")
    # The run stays its author's launch: checked with the author's role, as the agent will.
    _check_values(store, queue, spec, run["resource"], str(author) if author else None)
    try:
        json.dumps(spec, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (UnicodeEncodeError, ValueError):
        raise UsageError("the edit holds a value JSON cannot store") from None
    said: list[str] = []
    before = (old.get("overrides") or {}).get("run_config") or {}
    for key, value in changes.items():
        if not _same(before.get(key, _UNSET), value):
            said.append(f"{key} {_shown(before.get(key, _UNSET))} -> {_shown(value)}")
    was_vars = old.get("template_variables") or {}
    declared = (queue["config"] or {}).get("template_variables") or {}
    for name in values:
        now = spec["template_variables"][name]
        if not _same(was_vars.get(name, _UNSET), now):
            was = _shown(was_vars.get(name, _UNSET))
            default = (declared.get(name) or {}).get("default", _UNSET)
            if name not in was_vars and default is not _UNSET:  # what the run would have used
                was = f"(default {_shown(default)})"
            said.append(f"template variable {name} {was} -> {_shown(now)}")
    if prio is not None and prio != run["priority"]:
        was = PRIORITY_NAMES.get(run["priority"], str(run["priority"]))
        said.append(f"priority {was} -> {PRIORITY_NAMES[prio]}")
    if not said:
        return run, []
    new_prio = run["priority"] if prio is None else prio
    store.runs.edit_queued(
        run["id"], expect=run, spec=spec, priority=new_prio,
        message=f"edited by {user}: {', '.join(said)}",
    )  # fmt: skip
    return store.runs.get(run["id"]), said
