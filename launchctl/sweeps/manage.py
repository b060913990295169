"""Sweeps: create one from a W&B sweep config, list them, pause, resume, stop, cancel.

A sweep belongs to its queue: its trials are runs of that queue, launched as ``launch
-q`` launches (same templates, guardrails, GPUs). Who may do what: anyone who may launch
into the queue (a member of its entity) creates a sweep; its author, or an admin of the
queue's entity, pauses, resumes, stops or cancels it (as ``runs cancel``).

States: ``running`` (the scheduler proposes trials), ``paused`` (none proposed; running
ones go on), ``stopped`` (none proposed any more, running ones finish), ``cancelled``
(also its queued and running trials are cancelled), ``finished`` (the search or its
run_cap is done), ``failed`` (the scheduler could not go on; the reason says why).
Every change is one guarded update: a finished sweep is not resumed, a cancelled one
not stopped.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from launchctl import identity
from launchctl.errors import LaunchctlError, StateConflict, UsageError
from launchctl.store import Row, Store
from launchctl.store.sweeps import STATES, SweepTable
from launchctl.sweeps.config import SweepConfig

__all__ = [
    "STATES", "Created", "PermissionDenied", "cancel", "create", "finish", "get", "listing",
    "local_job_ref", "pause", "resume", "stop", "table", "trial_spec",
]  # fmt: skip

SCHEDULABLE = frozenset({"running"})
# Which states each action moves a sweep from.
PAUSABLE = ("running",)
RESUMABLE = ("paused",)
STOPPABLE = ("running", "paused")
CANCELLABLE = ("running", "paused", "stopped")
# launch-sweep --resume-id: anything not running and not over (W&B: anything not RUNNING).
RESUMABLE_BY_ID = ("paused", "stopped", "failed")


class PermissionDenied(LaunchctlError):
    """A user changing a sweep they neither wrote nor administer."""


def table(store: Store) -> SweepTable:
    """The sweeps table of ``store``."""
    return SweepTable(store.db)


@dataclass
class Created:
    sweep: Row
    notes: list[str] = field(default_factory=list)
    resumed: bool = False


def _first_value(spec: dict[str, Any]) -> Any:
    """A value the parameter can take, to check a trial's launch before any is made."""
    if "parameters" in spec:
        return {k: _first_value(v) for k, v in spec["parameters"].items()}
    dist = spec["distribution"]
    if dist == "constant":
        return spec["value"]
    if dist.startswith("categorical"):
        return spec["values"][0]
    if "min" in spec:
        return spec["min"]
    return spec.get("mu", spec.get("a", 0.0))


def local_job_ref(ref: str) -> str:
    """W&B's job reference as a launchctl job reference: a W&B job name may hold spaces
    (W&B's docs sweep over ``wandb/jobs/Hello World 2:latest``); launchctl's job names
    cannot, and ``job create`` suggests the name with ``_`` for each such character, so
    that is the job a reference with spaces names (``wandb/jobs/Hello_World_2:latest``)."""
    import re

    head, slash, last = ref.strip().rpartition("/")
    name, colon, alias = last.partition(":")
    name = re.sub(r"[^a-zA-Z0-9_\-.]", "_", name.strip())
    return f"{head}{slash}{name}{colon}{alias}"


def trial_spec(sweep: Row, params: Mapping[str, Any]) -> dict[str, Any]:
    """The launch spec of one trial of ``sweep`` with ``params``: what ``launch -q`` would
    queue (pass it to ``launchctl.launch.submit``). The parameters are its run config
    (WANDB_CONFIG); the config's ``command``, filled in, is its entry point; the sweep's
    ``launch`` block gives its priority and template variables."""
    from launchctl.sweeps.command import build

    config = sweep["config"]
    launch = sweep.get("launch") or {}
    overrides: dict[str, Any] = {"run_config": dict(params)}
    entry = build(config.get("command"), params, program=config.get("program"))
    if entry is not None:
        overrides["entry_point"] = entry
    spec: dict[str, Any] = {
        "queue": sweep["queue_name"],
        "project": sweep["project"],
        "entity": sweep["entity"],
        "overrides": overrides,
    }
    if config.get("job"):
        spec["job"] = local_job_ref(config["job"])
    else:
        spec["docker"] = {"docker_image": config["image_uri"]}
    if launch.get("priority") is not None:
        spec["priority"] = launch["priority"]
    if launch.get("template_variables"):
        spec["template_variables"] = dict(launch["template_variables"])
    elif launch.get("resource_args"):
        spec["resource_args"] = launch["resource_args"]
    return spec


def _check_trial_launch(store: Store, queue: Row, sweep: Row, sample: dict[str, Any]) -> Row:
    """Check now what each trial's launch will be checked for (the queue's rules, the
    launcher's role, the job, the template values), so that a sweep whose trials could
    never launch is refused, not stored. Returns the job version (or {} for an image)."""
    from launchctl import jobs, teams
    from launchctl.buildconfig import check_spec_images
    from launchctl.launch import parse_priority
    from launchctl.resolve import resolve

    spec = trial_spec(sweep, sample)
    teams.check_launch(store, queue, spec)
    parse_priority(spec.get("priority"))
    if spec.get("resource_args"):
        from launchctl.queues import validate_resource_args

        validate_resource_args(spec["resource_args"], where="sweep config launch.resource_args")
    resolve(queue, spec, queue["resource"])
    check_spec_images(spec, "sweep config")
    version: Row = {}
    if spec.get("job"):
        version = jobs.find_version(store, spec["job"], entity=str(sweep["entity"]))
    image = spec.get("docker", {}).get("docker_image")
    runs_image = bool(image) or version.get("source_type") == "image"
    if queue["resource"] == "local-process" and runs_image:
        raise UsageError(
            f"queue '{queue['name']}' runs local processes and cannot run a docker image;"
            " use a local-container queue"
        )
    entry = spec["overrides"].get("entry_point") or version.get("entrypoint")
    if queue["resource"] == "local-process" and not entry:
        raise UsageError("nothing to run: the job has no entry point; give the config a command")
    return version


def create(
    store: Store,
    config_path: str | None,
    *,
    queue: str | None = None,
    project: str | None = None,
    entity: str | None = None,
    resume_id: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Created:
    """``launch-sweep``: a new sweep from a W&B sweep config, or (``resume_id``) an
    existing one set running again. Nothing is stored when this raises; W&B's warnings
    come back in ``notes``, to be said once the sweep is stored."""
    from launchctl.names import check_identifier
    from launchctl.sweeps import config as sweepconfig
    from launchctl.sweeps.command import fill_envvars

    if not config_path and not resume_id:
        raise UsageError("a sweep config (CONFIG) and/or --resume-id is required")
    if resume_id:
        return _resume_by_id(store, resume_id, config_path, queue=queue)
    assert config_path is not None
    parsed: SweepConfig = sweepconfig.parse(sweepconfig.load(config_path))
    queue_name = queue or parsed.launch.get("queue")
    if not queue_name:  # W&B's refusal
        raise UsageError(
            "launch-sweeps require setting a 'queue': use --queue (-q) or a 'queue' key in the"
            " 'launch' section of the config"
        )
    queue_row = store.queues.get(str(queue_name))
    config = dict(parsed.config)
    if "command" in config:
        config["command"] = fill_envvars(config["command"], environ or os.environ)
    user = identity.current_user()
    sweep: Row = {
        "entity": entity or config.get("entity") or queue_row["entity"],
        "project": project or config.get("project"),
        "queue_name": queue_row["name"],
        "config": config,
    }
    check_identifier(str(sweep["entity"]), "entity")
    if sweep["project"]:
        check_identifier(str(sweep["project"]), "project")
    sample = {name: _first_value(spec) for name, spec in parsed.parameters.items()}
    sweep["launch"] = parsed.launch
    version = _check_trial_launch(store, queue_row, sweep, sample)
    if not sweep["project"]:
        from launchctl.jobs import DEFAULT_PROJECT

        sweep["project"] = version.get("project") or DEFAULT_PROJECT
    check_identifier(str(sweep["project"]), "project")
    from launchctl.launch import new_run_id

    row = {
        "id": new_run_id(),
        "entity": sweep["entity"],
        "project": sweep["project"],
        "queue_name": queue_row["name"],
        "config": config,
        "scheduler": parsed.scheduler,
        "launch": parsed.launch,
        "method": parsed.method,
        "metric_name": parsed.metric_name,
        "metric_goal": parsed.metric_goal,
        "num_workers": parsed.num_workers,
        "run_cap": parsed.run_cap,
        "author": user,
    }
    notes = list(parsed.notes)
    if config.get("job") and local_job_ref(config["job"]) != config["job"].strip():
        notes.append(
            f"note: W&B's job {config['job']!r} is launchctl's job"
            f" {local_job_ref(config['job'])} (job names hold no spaces)"
        )
    if config.get("command") and config.get("job"):
        notes.append(  # W&B's scheduler says it for each trial; once is enough
            "note: the sweep's command replaces the job's entry point in each trial"
        )
    return Created(table(store).insert(row), notes)


def _resume_by_id(
    store: Store, sweep_id: str, config_path: str | None, *, queue: str | None
) -> Created:
    """W&B's ``launch-sweep --resume-id``: set a sweep that is not running going again,
    with the config it was made with (a config given too is ignored, as W&B says)."""
    sweep = table(store).get(sweep_id)
    if sweep["state"] == "running":  # W&B's refusal
        raise StateConflict(f"cannot resume sweep {sweep['id']}: it is already running")
    if queue and queue != sweep["queue_name"]:
        raise UsageError(
            f"sweep {sweep['id']} runs on queue {sweep['queue_name']}, not {queue}: a sweep's"
            " trials stay on one queue"
        )
    user = require_owner(store, sweep, "resume")
    notes = []
    if config_path:
        notes.append(
            "warning: sweep parameters loaded from the resumed sweep, ignoring provided config"
        )
    row = _move(store, sweep, "running", RESUMABLE_BY_ID, f"resumed by {user}")
    return Created(row, notes, resumed=True)


def require_owner(store: Store, sweep: Row, action: str, user: str | None = None) -> str:
    """Refuse unless ``user`` (default: the current user) is the sweep's author or an
    admin of its entity or of its queue's entity; returns the user."""
    user = user or identity.current_user()
    if sweep["author"] == user:
        return user
    entities = [sweep["entity"]]
    with contextlib.suppress(LaunchctlError):  # a queue deleted since
        entities.append(store.queues.get(sweep["queue_name"])["entity"])
    entities = list(dict.fromkeys(e for e in entities if e))
    if any(store.teams.role(str(e), user) == "admin" for e in entities):
        return user
    admins = " or ".join(f"'{e}'" for e in entities)
    raise PermissionDenied(
        f"user '{user}' may not {action} sweep {sweep['id']}: only its author"
        f" ('{sweep['author']}') or an admin of entity {admins} may"
    )


def _move(store: Store, sweep: Row, new: str, from_states: tuple[str, ...], reason: str) -> Row:
    try:
        return table(store).set_state(sweep["id"], new, from_states, reason=reason)
    except StateConflict as exc:
        state = str(exc).rsplit(" ", 1)[-1]
        raise StateConflict(_why_not(sweep["id"], new, state)) from None


def _why_not(sweep_id: str, new: str, state: str) -> str:
    verb = {"running": "resume", "paused": "pause", "stopped": "stop", "cancelled": "cancel"}
    action = verb.get(new, f"mark {new}")
    if state == new:
        return f"sweep {sweep_id} is already {state}"
    return f"cannot {action} sweep {sweep_id}: it is {state}"


def get(store: Store, sweep_id: str) -> Row:
    """One sweep (a unique id prefix is enough), its config blocks decoded."""
    return table(store).get(sweep_id)


def listing(store: Store, states: tuple[str, ...] = ()) -> list[Row]:
    """Every sweep, newest first, each with ``trials``: how many it has proposed so far."""
    rows = table(store).select(states)
    counts = table(store).trial_counts(r["id"] for r in rows)
    for row in rows:
        row["trials"] = counts.get(row["id"], 0)
    return rows


def pause(store: Store, sweep_id: str) -> Row:
    """No new trials until resumed; running ones go on."""
    sweep = get(store, sweep_id)
    user = require_owner(store, sweep, "pause")
    return _move(store, sweep, "paused", PAUSABLE, f"paused by {user}")


def resume(store: Store, sweep_id: str) -> Row:
    sweep = get(store, sweep_id)
    user = require_owner(store, sweep, "resume")
    return _move(store, sweep, "running", RESUMABLE, f"resumed by {user}")


def stop(store: Store, sweep_id: str) -> Row:
    """No new trials, ever; the running ones finish."""
    sweep = get(store, sweep_id)
    user = require_owner(store, sweep, "stop")
    return _move(store, sweep, "stopped", STOPPABLE, f"stopped by {user}")


def cancel(store: Store, sweep_id: str, say: Callable[[str], None] = lambda _l: None) -> Row:
    """No new trials, and its queued and running trials cancelled (as ``runs cancel``).

    Returns the sweep with ``cancelled_runs``: the runs asked to stop."""
    sweep = get(store, sweep_id)
    user = require_owner(store, sweep, "cancel")
    row = _move(store, sweep, "cancelled", CANCELLABLE, f"cancelled by {user}")
    cancelled: list[str] = []
    for run_id in table(store).open_run_ids(sweep["id"]):
        try:
            store.runs.request_cancel(run_id, by=user)
        except StateConflict:  # it ended meanwhile
            continue
        cancelled.append(run_id)
    row["cancelled_runs"] = cancelled
    return row


def finish(store: Store, sweep_id: str, state: str = "finished", reason: str | None = None) -> Row:
    """For the scheduler: the search (or run_cap) is done, or it cannot go on (``failed``)."""
    if state not in ("finished", "failed"):
        raise ValueError(state)
    return table(store).set_state(sweep_id, state, CANCELLABLE, reason=reason)
