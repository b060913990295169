"""W&B run queues: push a launch spec to one, serve one from this machine, and the outbox.

- ``push_launch``: ``launchctl launch --remote-queue ENTITY/PROJECT/QUEUE`` sends the launch
  spec a local launch would build, in W&B's keys, with ``pushToRunQueueByName``. Offline,
  the push waits in the outbox (``sync_outbox``) and the next sync sends it.
- ``RemoteBridge``: ``launchctl agent --remote-queue ENTITY/PROJECT/QUEUE`` registers the agent
  (``createLaunchAgent``), reports its state (``updateLaunchAgent``: POLLING, RUNNING, KILLED),
  pops items (``popFromRunQueue``) while the agent has room, and makes each a local run on
  the local queue of the same name (its admin's config and guardrails apply), which the agent
  then runs with every local guarantee. The item is acked (``ackRunQueueItem``, the run id as
  the W&B run name) when it became a local run, and failed (``failRunQueueItem``, with the
  stage and reason) when the run fails before it starts, or when it is refused.
- The outbox step (``owed``/``send``, in ``engine.STEPS``): calls that could not be made
  while the server was offline (pushes, acks, fails), each sent once.

Why ack when the item became a local run, not when the run starts: W&B's server gives an
item that is not acked within a minute back to its queue (the comment by ``max_schedulers``
in W&B's ``sdk/launch/agent/agent.py``), so an item waiting for a build would be popped
again. W&B's own agent acks before it builds, too (``LaunchAgent._task_run_job``), and
fails an item it acked when the build fails.

The GraphQL documents, variables and states are W&B's client's, 0.31.0:
``wandb/sdk/launch/api.py`` (``LaunchApi.push_to_run_queue_by_name``, ``pop_from_run_queue``,
``ack_run_queue_item``, ``fail_run_queue_item``, ``get_project_run_queues``,
``create_launch_agent``, ``update_launch_agent_status``) and ``sdk/launch/agent/agent.py``
(``AGENT_POLLING``/``AGENT_RUNNING``/``AGENT_KILLED``).

A server's answer is data: a popped spec is checked like a launch (names, images, the
queue's template variables), its admin-only keys (``resource_args``, ``builder``,
``registry``) and any ``_wandb_api_key`` are dropped, a ``uri`` must be a git URL, and
nothing a server says becomes a path or reaches a terminal unescaped.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from launchctl import __version__
from launchctl.errors import LaunchctlError, UsageError
from launchctl.states import TERMINAL
from launchctl.store.remote import RemoteTable
from launchctl.sync.wire import Refused, SyncError, Unreachable, one_line

if TYPE_CHECKING:
    from launchctl.store import Store
    from launchctl.sync.wire import WandbServer

# W&B's agent states (sdk/launch/agent/agent.py: AGENT_POLLING, AGENT_RUNNING, AGENT_KILLED).
POLLING, RUNNING, KILLED = "POLLING", "RUNNING", "KILLED"
# W&B's priorities as pushToRunQueueByName takes them (wandb/cli/cli.py launch: priority_map).
PRIORITY_VALUES = {"critical": 0, "high": 1, "medium": 2, "low": 3}
# Seconds between two polls of a remote queue; W&B's agent waits 10 (AGENT_POLLING_INTERVAL).
DEFAULT_POLL_S = 5.0
# Seconds between two heartbeats (updateLaunchAgent) when the state does not change
# (W&B's agent sends one every second tick, 20 s).
HEARTBEAT_S = 20.0
# Keys of a popped spec the local queue's admin decides, not the pusher: dropped.
ADMIN_KEYS = ("resource_args", "builder", "registry")
# Keys of a popped spec that mean nothing for a local run: dropped.
DROPPED_KEYS = ("run_id", "sweep_id", "additional_services", "resource", "queue", "author",
                "priority", "_wandb_api_key", "queue_entity")  # fmt: skip
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_GIT_URL = re.compile(r"^(https?://|ssh://|git@|git://)")


# -- GraphQL documents, as W&B's client sends them -----------------------------------------

POP = """
mutation popFromRunQueue($entity: String!, $project: String!, $queueName: String!, $launchAgentId: ID)  {
    popFromRunQueue(input: {
        entityName: $entity,
        projectName: $project,
        queueName: $queueName,
        launchAgentId: $launchAgentId
    }) {
        runQueueItemId
        runSpec
    }
}
"""  # noqa: E501

ACK = """
mutation ackRunQueueItem($itemId: ID!, $runId: String!)  {
    ackRunQueueItem(input: { runQueueItemId: $itemId, runName: $runId }) {
        success
    }
}
"""

FAIL = """
mutation failRunQueueItem($runQueueItemId: ID!, $message: String!, $stage: String!, $filePaths: [String!]) {
    failRunQueueItem(
        input: {
            runQueueItemId: $runQueueItemId
            message: $message
            stage: $stage
            filePaths: $filePaths
        }
    ) {
        success
    }
}
"""  # noqa: E501

PROJECT_RUN_QUEUES = """
query ProjectRunQueues($entity: String!, $projectName: String!){
    project(entityName: $entity, name: $projectName) {
        runQueues {
            id
            name
            createdBy
            access
        }
    }
}
"""

UPDATE_AGENT = """
mutation updateLaunchAgent($agentId: ID!, $agentStatus: String){
    updateLaunchAgent(
        input: {
            launchAgentId: $agentId
            agentStatus: $agentStatus
        }
    ) {
        success
    }
}
"""


def push_document(*, priority: bool, template_variables: bool) -> str:
    """W&B's ``pushToRunQueueByName``, with ``$priority`` and ``$templateVariableValues``
    only when given (LaunchApi.push_to_run_queue_by_name builds it the same way)."""
    params = (
        "$entityName: String!, $projectName: String!, $queueName: String!, $runSpec: JSONString!"
    )
    inputs = (
        "entityName: $entityName, projectName: $projectName, queueName: $queueName,"
        " runSpec: $runSpec"
    )
    if priority:
        params += ", $priority: Int"
        inputs += ", priority: $priority"
    if template_variables:
        params += ", $templateVariableValues: JSONString"
        inputs += ", templateVariableValues: $templateVariableValues"
    return (
        f"mutation pushToRunQueueByName({params}) {{\n"
        f"    pushToRunQueueByName(input: {{{inputs}}}) {{\n"
        "        runQueueItemId\n        runSpec\n    }\n}\n"
    )


def create_agent_document() -> str:
    """W&B's ``createLaunchAgent`` (LaunchApi.create_launch_agent)."""
    return (
        "mutation createLaunchAgent($entity: String!, $project: String!, $queues: [ID!]!,"
        " $hostname: String!, $agentConfig: JSONString, $version: String) {\n"
        "    createLaunchAgent(input: {entityName: $entity, projectName: $project,"
        " runQueues: $queues, hostname: $hostname, agentConfig: $agentConfig,"
        " version: $version}) {\n        launchAgentId\n    }\n}\n"
    )


# -- naming a remote queue -----------------------------------------------------------------


@dataclass(frozen=True)
class RemoteQueue:
    """A W&B run queue, ``ENTITY/PROJECT/QUEUE`` (W&B's project for queues is usually
    ``model-registry``), and the local queue its items run on (``=LOCAL``; default: the
    queue's own name)."""

    entity: str
    project: str
    queue: str
    local: str

    def __str__(self) -> str:
        return f"{self.entity}/{self.project}/{self.queue}"


def parse_remote_queue(text: str, *, local_allowed: bool = True) -> RemoteQueue:
    """``ENTITY/PROJECT/QUEUE`` or, for an agent, ``ENTITY/PROJECT/QUEUE=LOCAL_QUEUE``."""
    shown = ascii(text)[:80]
    target, eq, local = text.partition("=")
    if eq and not local_allowed:
        raise UsageError(f"--remote-queue takes ENTITY/PROJECT/QUEUE, got {shown}")
    parts = target.split("/")
    if len(parts) != 3 or not all(_PART.fullmatch(p) for p in parts):
        raise UsageError(
            f"--remote-queue takes ENTITY/PROJECT/QUEUE (W&B's project for queues is usually"
            f" model-registry), each 1-128 letters, digits, '.', '_' or '-'; got {shown}"
        )
    if eq:
        from launchctl.names import check_identifier

        check_identifier(local, "local queue")
    return RemoteQueue(parts[0], parts[1], parts[2], local or parts[2])


def _server(base_url: str | None, store: Store | None, *, need_key: bool = False) -> WandbServer:
    from launchctl.sync.credentials import resolve
    from launchctl.sync.wire import WandbServer

    return WandbServer(resolve(base_url, store=store, need_key=need_key))


def _spec_of(value: Any) -> dict[str, Any]:
    """A ``runSpec`` as a server sends it: a JSON string (W&B's JSONString) or an object."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise Refused("the server sent a run spec that is not JSON") from None
    if not isinstance(value, dict):
        raise Refused("the server sent a run spec that is not an object")
    return value


# -- the wire operations -------------------------------------------------------------------


def push(
    server: WandbServer,
    rq: RemoteQueue,
    spec: dict[str, Any],
    *,
    template_variables: dict[str, Any] | None = None,
    priority: int | None = None,
) -> str:
    """Push one launch spec; the item's id (W&B's ``runQueueItemId``)."""
    variables: dict[str, Any] = {
        "entityName": rq.entity,
        "projectName": rq.project,
        "queueName": rq.queue,
        "runSpec": json.dumps(spec),
    }
    if priority is not None:
        variables["priority"] = priority
    if template_variables is not None:
        variables["templateVariableValues"] = json.dumps(template_variables)
    data = server.graphql(
        push_document(
            priority=priority is not None, template_variables=template_variables is not None
        ),
        variables,
    )
    result = data.get("pushToRunQueueByName")
    if not isinstance(result, dict) or not result.get("runQueueItemId"):
        raise Refused(
            f"the server at {server.base_url} did not add the launch to queue {rq}"
            " (does the queue exist, and may this key push to it?)"
        )
    return str(result["runQueueItemId"])


def pop(server: WandbServer, rq: RemoteQueue, agent_id: str | None) -> dict[str, Any] | None:
    """The next item of the queue, claimed for this agent; None when it is empty."""
    data = server.graphql(
        POP,
        {"entity": rq.entity, "project": rq.project, "queueName": rq.queue,
         "launchAgentId": agent_id},
    )  # fmt: skip
    item = data.get("popFromRunQueue")
    if not isinstance(item, dict) or not item.get("runQueueItemId"):
        return None
    return item


def ack(server: WandbServer, item_id: str, run_name: str) -> bool:
    data = server.graphql(ACK, {"itemId": item_id, "runId": run_name})
    return bool((data.get("ackRunQueueItem") or {}).get("success"))


def fail(server: WandbServer, item_id: str, message: str, stage: str) -> bool:
    data = server.graphql(FAIL, {"runQueueItemId": item_id, "message": message, "stage": stage})
    return bool((data.get("failRunQueueItem") or {}).get("success"))


def create_agent(
    server: WandbServer, entity: str, project: str, queues: list[str], config: dict[str, Any]
) -> str:
    """Register a launch agent for ``queues`` of ``entity/project``; its id.

    As W&B's ``create_launch_agent``: the queues' ids come from ``ProjectRunQueues``, and a
    queue the project does not have is refused, naming the ones it has. (W&B creates a
    ``default`` queue in a project with none; launchctl never creates remote queues.)"""
    data = server.graphql(PROJECT_RUN_QUEUES, {"entity": entity, "projectName": project})
    found = (data.get("project") or {}).get("runQueues") or []
    ids = {str(q.get("name")): str(q.get("id")) for q in found if isinstance(q, dict)}
    missing = [q for q in queues if q not in ids]
    if missing:
        have = ", ".join(one_line(n, 60) for n in sorted(ids)) or "none"
        raise Refused(
            f"the server at {server.base_url} has no queue {one_line(missing[0], 60)} in"
            f" {entity}/{project} (its queues: {have})"
        )
    variables = {
        "entity": entity,
        "project": project,
        "queues": [ids[q] for q in queues],
        "hostname": socket.gethostname(),
        "agentConfig": json.dumps(config),
        "version": f"launchctl@{__version__}",
    }
    result = server.graphql(create_agent_document(), variables).get("createLaunchAgent") or {}
    agent_id = result.get("launchAgentId") if isinstance(result, dict) else None
    if not agent_id:
        raise Refused(f"the server at {server.base_url} did not register the launch agent")
    return str(agent_id)


def update_agent(server: WandbServer, agent_id: str, status: str) -> bool:
    data = server.graphql(UPDATE_AGENT, {"agentId": agent_id, "agentStatus": status})
    return bool((data.get("updateLaunchAgent") or {}).get("success"))


# -- launch --remote-queue -----------------------------------------------------------------


@dataclass
class Pushed:
    """What ``launch --remote-queue`` did: the item's id, or the outbox row it waits in."""

    remote_queue: str
    base_url: str
    spec: dict[str, Any]
    template_variables: dict[str, Any] | None
    priority: str | None
    item_id: str | None = None
    outbox_id: int | None = None
    offline: str | None = None  # why it waits

    def as_json(self) -> dict[str, Any]:
        return {
            "remote_queue": self.remote_queue,
            "base_url": self.base_url,
            "item_id": self.item_id,
            "outbox_id": self.outbox_id,
            "waiting": self.outbox_id is not None,
            "spec": self.spec,
            "template_variables": self.template_variables,
            "priority": self.priority,
        }


def _typed(value: str) -> Any:
    """A ``--set-var`` value for a W&B queue, whose schema launchctl does not read: a whole
    number or a decimal is sent as a number (W&B's CLI converts by the queue's schema)."""
    for kind in (int, float):
        try:
            number = kind(value)
        except ValueError:
            continue
        if kind is float and not (number == number and abs(number) != float("inf")):
            return value
        return number
    return value


def remote_spec(
    spec: dict[str, Any], rq: RemoteQueue
) -> tuple[dict[str, Any], dict[str, Any] | None, str | None]:
    """A launch spec built by ``launch.prepare_spec`` as W&B's ``construct_launch_spec``
    makes it for a queue: ``entity`` (default: the queue's), ``project``, ``author``,
    ``docker``, ``git``, ``overrides`` and ``resource``; the template variables and the
    priority travel beside it. Returns (spec, template variables, priority name)."""
    from launchctl import identity, names
    from launchctl.launch import CREATE_KEY

    spec = copy.deepcopy(spec)
    if spec.get("uri"):
        raise UsageError(
            "--remote-queue takes a job (-j) or an image (-d), as W&B's launch_add does: a"
            " W&B queue carries a launch spec, not this machine's code (-u)"
        )
    if spec.get(CREATE_KEY):
        raise UsageError("--job-name, --build-context and --base-image need -u, not --remote-queue")
    image = (spec.get("docker") or {}).get("docker_image")
    if bool(spec.get("job")) == bool(image):  # W&B: validate_launch_spec_source
        raise UsageError("--remote-queue needs exactly one of a job (-j) or an image (-d)")
    tvars = spec.pop("template_variables", None)
    if tvars is not None:
        tvars = {k: _typed(v) if isinstance(v, str) else v for k, v in tvars.items()}
    priority = spec.pop("priority", None)
    spec.pop("queue", None)
    spec["entity"] = spec.get("entity") or rq.entity
    spec["project"] = spec.get("project") or ""
    if not spec["project"] and spec.get("job"):  # W&B: the job's project (get_project_from_job)
        parts = str(spec["job"]).split(":")[0].split("/")
        spec["project"] = parts[1] if len(parts) == 3 else ""
    spec["author"] = identity.current_user()
    spec.setdefault("docker", {})
    spec.setdefault("git", {})
    spec.setdefault("overrides", {})
    spec.setdefault("resource", None)
    names.check_run_names({k: v for k, v in spec.items() if k in ("entity", "name")})
    if spec["project"]:
        names.check_name(spec["project"], "project")
    return spec, tvars, priority


def push_launch(
    store: Store, target: str, spec: dict[str, Any], *, base_url: str | None = None
) -> Pushed:
    """``launch --remote-queue``: push now, or, with the server offline, keep the push in the
    outbox (the next ``launchctl sync`` or ``agent --sync`` sends it once).

    Refusals (no key, a bad key, a queue the server does not have) raise, writing nothing."""
    rq = parse_remote_queue(target, local_allowed=False)
    wire_spec, tvars, priority = remote_spec(spec, rq)
    server = _server(base_url, store)
    table = RemoteTable(store.db)
    done = Pushed(str(rq), server.base_url, wire_spec, tvars, priority)
    value = PRIORITY_VALUES[priority] if priority else None
    try:
        done.item_id = push(server, rq, wire_spec, template_variables=tvars, priority=value)
    except Unreachable as exc:
        done.offline = str(exc)
        row = table.add_item(direction="pushed", base_url=server.base_url, entity=rq.entity,
                             project=rq.project, queue=rq.queue)  # fmt: skip
        payload = _push_payload(rq, wire_spec, tvars, value, row)
        done.outbox_id = table.owe(server.base_url, "push", payload)
        return done
    finally:
        server.close()
    table.add_item(direction="pushed", base_url=server.base_url, entity=rq.entity,
                   project=rq.project, queue=rq.queue, item_id=done.item_id)  # fmt: skip
    return done


def _push_payload(
    rq: RemoteQueue, spec: dict[str, Any], tvars: dict[str, Any] | None, priority: int | None,
    row: int,
) -> dict[str, Any]:  # fmt: skip
    return {"entity": rq.entity, "project": rq.project, "queue": rq.queue, "spec": spec,
            "template_variables": tvars, "priority": priority, "item_row": row}  # fmt: skip


# -- the outbox ----------------------------------------------------------------------------


@dataclass
class Delivered:
    """One outbox row a sender dealt with: ``sent``, ``refused`` (never retried) or
    ``offline`` (owed again)."""

    outbox_id: int
    kind: str
    outcome: str
    detail: str = ""
    item_id: str | None = None
    run_id: str | None = None


def deliver(
    store: Store,
    server: WandbServer,
    *,
    say: Callable[[str], None] | None = None,
    on_done: Callable[[Delivered], None] | None = None,
    run_ids: tuple[str, ...] | None = None,
    raise_offline: bool = False,
) -> list[Delivered]:
    """Send what the outbox owes this server, oldest first; stops at the first sign that it
    is offline (the rest stays owed; ``raise_offline``: raise ``Unreachable`` then). A
    refused call is marked sent with the refusal, so it is never retried, and said once."""
    table = RemoteTable(store.db)
    out: list[Delivered] = []
    for row in table.owed(server.base_url):
        if run_ids is not None and row["run_id"] not in run_ids:
            continue
        kind, payload = row["kind"], row["payload"]
        if not table.claim(row["id"]):
            continue  # another sender has it
        done = Delivered(row["id"], kind, "sent", run_id=row["run_id"])
        try:
            done.item_id = _call(server, table, kind, payload)
            table.sent(row["id"])
        except Unreachable as exc:
            table.unsent(row["id"], str(exc))
            if raise_offline:
                raise
            out.append(Delivered(row["id"], kind, "offline", str(exc), run_id=row["run_id"]))
            break
        except SyncError as exc:
            table.sent(row["id"], note=f"refused: {exc}")
            done.outcome, done.detail = "refused", str(exc)
            if say is not None:
                say(f"outbox #{row['id']} ({kind}) refused: {exc}")
        except BaseException as exc:  # a bug in one row never stops the rest
            table.unsent(row["id"], f"internal error: {type(exc).__name__}")
            if not isinstance(exc, Exception):
                raise
            done.outcome, done.detail = "error", f"internal error: {type(exc).__name__}: {exc}"
        out.append(done)
        if on_done is not None:
            on_done(done)
    return out


def _call(
    server: WandbServer, table: RemoteTable, kind: str, payload: dict[str, Any]
) -> str | None:
    """Make one owed call; the item's id when it has one."""
    if kind == "push":
        rq = RemoteQueue(payload["entity"], payload["project"], payload["queue"], payload["queue"])
        item_id = push(
            server,
            rq,
            payload["spec"],
            template_variables=payload.get("template_variables"),
            priority=payload.get("priority"),
        )
        if payload.get("item_row"):
            table.set_item_id(int(payload["item_row"]), item_id)
        return item_id
    if kind == "ack":
        if not ack(server, payload["item_id"], payload["run_name"]):
            raise Refused(
                f"the server did not take the ack of item {one_line(payload['item_id'], 60)}"
            )
        return str(payload["item_id"])
    if kind == "fail":
        fail(server, payload["item_id"], payload["message"], payload["stage"])
        return str(payload["item_id"])
    raise Refused(f"unknown outbox call {one_line(kind, 40)}")


# -- the engine's step: the outbox ----------------------------------------------------------
# launchctl.sync.engine calls ``owed`` and ``send`` (this module is in engine.STEPS).

STEP = "outbox"


def _describe(kind: str, payload: dict[str, Any]) -> tuple[str, str | None]:
    """An outbox call in words, and where it goes: ``push to E/P/Q``, ``ack of item X``."""
    if kind == "push":
        where = f"{payload.get('entity')}/{payload.get('project')}/{payload.get('queue')}"
        return f"push to W&B queue {one_line(where, 200)}", where
    item = one_line(str(payload.get("item_id")), 60)
    if kind == "fail":
        return f"fail of item {item} at stage {one_line(str(payload.get('stage')), 20)}", item
    return f"{one_line(kind, 20)} of item {item}", item


def owed(store: Store, target: Any) -> list[Any]:
    """The calls the outbox owes ``target``'s server (no network)."""
    from launchctl.sync.engine import Owed

    out = []
    for row in RemoteTable(store.db).owed(target.base_url):
        if target.run_ids is not None and row["run_id"] not in target.run_ids:
            continue
        detail, remote = _describe(row["kind"], row["payload"])
        extra = {"outbox_id": row["id"], "attempts": row["attempts"],
                 "last_error": row["last_error"]}  # fmt: skip
        out.append(Owed(STEP, row["run_id"], (row["kind"],), detail, remote=remote, extra=extra))
    return out


def send(server: WandbServer, target: Any, *, progress: Any, dry_run: bool) -> list[Any]:
    """Make the owed calls, each once; ``Unreachable`` stops the pass (the rest stays owed)."""
    from launchctl.sync.engine import Sent

    sent: list[Any] = []
    if dry_run:
        for item in owed(target.store, target):
            done = Sent(STEP, item.run_id, item.what, remote=item.remote, extra=item.extra)
            sent.append(done)
            progress(done)
        return sent

    def on_done(d: Delivered) -> None:
        extra = {"outbox_id": d.outbox_id, "outcome": d.outcome}
        if d.detail:
            extra["detail"] = d.detail
        item = Sent(STEP, d.run_id, (d.kind,), remote=d.item_id, requests=1, extra=extra)
        sent.append(item)
        progress(item)

    deliver(target.store, server, on_done=on_done, run_ids=target.run_ids, raise_offline=True)
    return sent


# -- agent --remote-queue ------------------------------------------------------------------


def local_spec(
    popped: dict[str, Any], rq: RemoteQueue, queue_entity: str
) -> tuple[dict[str, Any], list[str]]:
    """The launch spec of the local run a popped item becomes, and notes on what was dropped.

    Only what a member may set on a local queue is kept: job or image, overrides, name,
    project, entity, template variables, git version. The local queue's admin decides the
    rest (its config and guardrails apply), so W&B's rendered ``resource_args`` (made from
    the remote queue's template), ``builder`` and ``registry`` are dropped; ``uri`` must be
    a git URL (a server never names a folder of this machine). A bare job name is a job of
    the local queue's entity (``queue_entity``): the run's entity is a W&B entity, which
    need not exist here."""
    spec = copy.deepcopy(popped)
    notes: list[str] = []
    for key in ADMIN_KEYS:
        if spec.pop(key, None):
            notes.append(f"its {key} was dropped: the local queue {rq.local}'s config applies")
    for key in DROPPED_KEYS:
        spec.pop(key, None)
    uri = spec.get("uri")
    if uri is not None and not (isinstance(uri, str) and _GIT_URL.match(uri)):
        raise UsageError("the item's uri is not a git URL: a server never names a local folder")
    if not uri:
        spec.pop("uri", None)
    if isinstance(spec.get("git"), dict):
        spec["git"] = {k: v for k, v in spec["git"].items() if k == "version" and v}
        if not spec["git"]:
            spec.pop("git")
    if isinstance(spec.get("docker"), dict) and not spec["docker"].get("docker_image"):
        spec.pop("docker")
    overrides = spec.setdefault("overrides", {})
    if not isinstance(overrides, dict):
        raise UsageError("the item's overrides must be an object")
    if isinstance(overrides, dict):
        for key in ("artifacts", "files"):
            overrides.pop(key, None)
        if overrides.get("entry_point") == []:
            overrides.pop("entry_point")
    for key in ("project", "name"):
        if not spec.get(key):
            spec.pop(key, None)
    from launchctl.launch import SPEC_KEYS

    unknown = sorted(set(spec) - SPEC_KEYS)
    for key in unknown:
        spec.pop(key)
    if unknown:
        notes.append(f"keys not used here were dropped: {one_line(', '.join(unknown), 120)}")
    job = spec.get("job")
    if isinstance(job, str) and "/" not in job:
        spec["job"] = f"{queue_entity}/{job}"
    spec["queue"] = rq.local
    return spec, notes


def checked_spec(spec: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """A popped spec checked as a local launch's ``-c`` spec is (launch.prepare_spec: its
    keys, types, entry point, what it runs), so a remote item gets no check a launcher would
    not. The spec goes through a private file launchctl names: a server's text is never
    taken for a path."""
    import tempfile

    from launchctl.launch import LaunchRequest, prepare_spec

    with tempfile.NamedTemporaryFile("w", suffix=".json", encoding="utf-8") as f:
        json.dump(spec, f)
        f.flush()
        return prepare_spec(LaunchRequest(config=f.name, queue=spec["queue"]), say=notes.append)


def check_local_queues(store: Store, queues: list[RemoteQueue]) -> None:
    """Each remote queue's items run on a local queue its admin made: refuse a missing one."""
    from launchctl.errors import NotFound

    for rq in queues:
        try:
            store.queues.get(rq.local)
        except NotFound:
            raise UsageError(
                f"W&B queue {rq} runs its items on the local queue '{rq.local}', which does not"
                f" exist: an admin creates it (`launchctl queue create {rq.local} ...`; its"
                " config and guardrails apply to the items), or name another with"
                f" --remote-queue {rq}=LOCAL_QUEUE"
            ) from None


@dataclass
class RemoteBridge:
    """Serves W&B queues for an agent, in a thread of its own: an offline server never
    slows the local queues. ``has_room()`` says whether the agent could start a run now."""

    store: Store  # the agent's; the bridge's thread opens its own connection
    queues: list[RemoteQueue]
    has_room: Callable[[], bool]
    say: Callable[[str], None]
    base_url: str | None = None
    agent_name: str = ""
    max_jobs: int = 1
    poll_s: float = field(default_factory=lambda: _poll_s())
    agent_ids: dict[tuple[str, str], str] = field(default_factory=dict)
    _server: Any = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _wake: threading.Event = field(default_factory=threading.Event)
    _status: str = ""
    _status_at: float = 0.0
    _offline: str | None = None  # what was said about the server being offline, once
    # Local runs of pulled items, pushed as W&B runs once they end (None: not read yet).
    _taken: set[str] | None = None

    def register(self) -> None:
        """``createLaunchAgent`` for each entity/project served. A refusal (a bad key, a
        queue the server does not have) raises: the agent does not start. Offline: said
        once, and registered when the server answers."""
        self._server = _server(self.base_url, self.store, need_key=True)
        try:
            self._register()
        except Unreachable as exc:
            self._say_offline(exc)

    def _register(self) -> None:
        groups: dict[tuple[str, str], list[str]] = {}
        for rq in self.queues:
            groups.setdefault((rq.entity, rq.project), []).append(rq.queue)
        for (entity, project), names in groups.items():
            if (entity, project) in self.agent_ids:
                continue
            config = {"entity": entity, "queues": names, "max_jobs": self.max_jobs,
                      "launchctl_agent": self.agent_name}  # fmt: skip
            agent_id = create_agent(self._server, entity, project, names, config)
            self.agent_ids[(entity, project)] = agent_id
            self.say(
                f"registered with {self._server.base_url} as launch agent"
                f" {one_line(agent_id, 60)} for {entity}/{project}: {', '.join(names)}"
            )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="launchctl-remote", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling; tell the server this agent is KILLED (W&B's agent does at exit)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._server is None:
            return
        with contextlib.suppress(SyncError):
            for agent_id in self.agent_ids.values():
                update_agent(self._server, agent_id, KILLED)
        self._server.close()

    # -- the thread ----------------------------------------------------------------------
    def _loop(self) -> None:
        from launchctl.store import Store

        store = Store(self.store.root)
        try:
            while not self._stop.is_set():
                busy = False
                try:
                    busy = self.once(store)
                except Unreachable as exc:
                    self._say_offline(exc)
                except LaunchctlError as exc:
                    self.say(f"remote queues: {exc}")
                except Exception as exc:  # never kill the agent's thread over one pass
                    self.say(f"remote queues: internal error: {type(exc).__name__}: {exc}")
                self._wake.wait(0.0 if busy else self.poll_s)
                self._wake.clear()
        finally:
            store.close()

    def once(self, store: Store) -> bool:
        """One pass: register if not yet, send what the outbox owes, fail items whose run
        failed before it started, pop new items while there is room, heartbeat. Returns
        whether an item was taken (poll again at once, as W&B's agent does)."""
        if len(self.agent_ids) < len({(q.entity, q.project) for q in self.queues}):
            self._register()
        deliver(store, self._server, say=self.say)
        self._report_unstarted(store)
        deliver(store, self._server, say=self.say)
        if self._offline is not None:
            self._offline = None
            self.say(f"the W&B server at {self._server.base_url} answers again; serving its queues")
        took = False
        for rq in self.queues:
            if self._stop.is_set() or not self.has_room() or _waiting(store, self._server.base_url):
                break
            if store.queues.get(rq.local)["paused"]:
                continue  # a paused local queue takes no new work, from here or W&B
            agent_id = self.agent_ids.get((rq.entity, rq.project))
            item = pop(self._server, rq, agent_id)
            if item is not None:
                self.take(store, rq, item)
                took = True
        if took:
            deliver(store, self._server, say=self.say)
        self._heartbeat(store, took=took)
        self._push_ended_runs(store)
        return took

    def take(self, store: Store, rq: RemoteQueue, item: dict[str, Any]) -> str | None:
        """Make a popped item a local run and owe its ack; a refused item is failed at
        stage ``agent``. Returns the local run's id."""
        from launchctl.launch import submit

        base_url = self._server.base_url
        table = RemoteTable(store.db)
        item_id = str(item["runQueueItemId"])
        shown = one_line(item_id, 60)
        known = table.find_item(base_url, item_id)
        if known is not None and known["direction"] == "pulled":
            # Given again (the server took back an item whose ack it did not get): the
            # local run that has it goes on; owe the ack once more, never a second run.
            if known["run_id"] is not None:
                table.owe(base_url, "ack", {"item_id": item_id, "run_name": known["run_id"]},
                          run_id=known["run_id"])  # fmt: skip
            return known["run_id"]
        try:
            queue = store.queues.get(rq.local)
            cleaned, notes = local_spec(_spec_of(item.get("runSpec")), rq, str(queue["entity"]))
            spec = checked_spec(cleaned, notes)
            run = submit(store, spec, say=lambda line: notes.append(line))
        except Exception as exc:  # refused here (LaunchctlError), or a spec nothing expected
            message = one_line(str(exc), 500)
            if not isinstance(exc, LaunchctlError):
                message = one_line(
                    f"the item's spec could not be read: {type(exc).__name__}: {exc}", 500
                )
            row = table.add_item(direction="pulled", base_url=base_url, entity=rq.entity,
                                 project=rq.project, queue=rq.queue, item_id=item_id,
                                 agent_id=self.agent_ids.get((rq.entity, rq.project)))  # fmt: skip
            table.owe(base_url, "fail", {"item_id": item_id, "message": message, "stage": "agent"},
                      item_row=row, mark="failed_at")  # fmt: skip
            self.say(f"W&B queue {rq}: item {shown} refused: {message}")
            return None
        row = table.add_item(direction="pulled", base_url=base_url, entity=rq.entity,
                             project=rq.project, queue=rq.queue, item_id=item_id, run_id=run["id"],
                             agent_id=self.agent_ids.get((rq.entity, rq.project)))  # fmt: skip
        table.owe(base_url, "ack", {"item_id": item_id, "run_name": run["id"]}, run_id=run["id"],
                  item_row=row, mark="acked_at")  # fmt: skip
        author = _spec_of(item.get("runSpec")).get("author")
        by = f", pushed by {one_line(str(author), 60)}" if author else ""
        with contextlib.suppress(LaunchctlError):
            store.runs.note(run["id"], f"from W&B queue {rq} on {base_url}: item {shown}{by}")
            for line in notes:
                store.runs.note(run["id"], f"from W&B queue {rq}: {one_line(line, 300)}")
        self.say(f"W&B queue {rq}: item {shown} is run {run['id']} on queue {rq.local}")
        if self._taken is not None:
            self._taken.add(str(run["id"]))
        return str(run["id"])

    def _report_unstarted(self, store: Store) -> None:
        """A pulled item whose run ended before it started (refused by the agent's checks,
        a failed build, cancelled) is failed on the server with the stage and reason."""
        table = RemoteTable(store.db)
        base_url = self._server.base_url
        for row in table.pulled_open(base_url):
            if row["run_started_at"] is not None or row["run_state"] not in ("failed", "stopped"):
                continue
            stage = row["run_stage"] or "agent"
            reason = row["run_reason"] or row["run_state"]
            if row["run_state"] == "stopped":
                reason = f"stopped before it started: {reason}"
            payload = {"item_id": row["item_id"], "message": one_line(reason, 500), "stage": stage}
            if table.owe(base_url, "fail", payload, run_id=row["run_id"], item_row=row["id"],
                         mark="failed_at"):  # fmt: skip
                self.say(
                    f"W&B queue {row['entity']}/{row['project']}/{row['queue']}: item"
                    f" {one_line(row['item_id'], 60)} failed at stage {stage} (run {row['run_id']})"
                )

    def _push_ended_runs(self, store: Store) -> None:
        """The runs of pulled items, once ended, go to the server as W&B runs (what
        ``launchctl sync`` sends of them: launchctl.sync.engine, for these runs only), so the
        item's run shows there without a sync. Runs of entities the agent's user is not a
        member of are left to that entity's members (the engine's rule)."""
        from launchctl.sync import engine
        from launchctl.sync.wire import Refused

        base_url = self._server.base_url
        if self._taken is None:
            self._taken = {r["run_id"] for r in RemoteTable(store.db).pulled_open(base_url)}
        ended = sorted(r for r in self._taken if store.runs.state(r) in _ENDED)
        if not ended:
            return
        target = engine.Target(store=store, base_url=base_url, run_ids=tuple(ended))
        try:
            report = engine.sync(self._server, target)
        except Refused as exc:
            self._taken.difference_update(ended)  # said once; `launchctl sync` can retry
            self.say(f"the runs of W&B queue items were not pushed: {exc}")
            return
        if report.offline is not None:
            raise Unreachable(report.offline)
        self._taken.difference_update(ended)
        runs = {s.run_id for s in report.sent if s.run_id}
        if runs:
            shown = ", ".join(sorted(runs))
            self.say(f"pushed {len(runs)} run(s) of W&B queue items to {base_url}: {shown}")

    def _heartbeat(self, store: Store, *, took: bool = False) -> None:
        """``updateLaunchAgent``: RUNNING once it took an item and while a pulled run is
        active (as W&B's ``run_job`` says), else POLLING; sent when it changes and every
        ``HEARTBEAT_S``."""
        status = RUNNING if took or _active(store, self._server.base_url) else POLLING
        now = time.monotonic()
        if status == self._status and now - self._status_at < HEARTBEAT_S:
            return
        for agent_id in self.agent_ids.values():
            update_agent(self._server, agent_id, status)
        self._status, self._status_at = status, now

    def _say_offline(self, exc: SyncError) -> None:
        if self._offline is None:
            self._offline = str(exc)
            self.say(
                f"{exc}: serving local queues; acks and fails wait in the outbox;"
                f" trying again every {self.poll_s:g}s"
            )


_ENDED = frozenset(str(s) for s in TERMINAL)


def _waiting(store: Store, base_url: str) -> bool:
    """Whether an item pulled from this server still waits in its local queue: pop no more
    until the agent took it (an item popped and not run would only wait here)."""
    return any(r["run_state"] == "queued" for r in RemoteTable(store.db).pulled_open(base_url))


def _active(store: Store, base_url: str) -> bool:
    from launchctl.states import ACTIVE

    active = {str(s) for s in ACTIVE} - {"queued"}
    return any(r["run_state"] in active for r in RemoteTable(store.db).pulled_open(base_url))


def _poll_s() -> float:
    raw = os.environ.get("LAUNCHCTL_REMOTE_POLL_S")
    try:
        return max(0.05, float(raw)) if raw else DEFAULT_POLL_S
    except ValueError:
        return DEFAULT_POLL_S
