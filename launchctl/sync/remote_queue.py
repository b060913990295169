"""W&B run queues: push a launch spec to one, serve one from this machine, and the outbox.

- ``push_launch``: ``launchctl launch --remote-queue ENTITY/PROJECT/QUEUE`` sends the launch
  spec a local launch would build, in W&B's keys, with ``pushToRunQueueByName``. Offline,
  the push waits in the outbox (``sync_outbox``) and the next sync sends it.
- ``RemoteBridge`` (in ``remote_agent.py``): ``launchctl agent --remote-queue
  ENTITY/PROJECT/QUEUE`` registers the agent (``createLaunchAgent``), reports its state
  (``updateLaunchAgent``: POLLING, RUNNING, KILLED), pops items (``popFromRunQueue``) while
  the agent has room, and makes each a local run on the local queue of the same name (its
  admin's config and guardrails apply), which the agent then runs with every local
  guarantee. The item is acked (``ackRunQueueItem``, the run id as the W&B run name) when
  it became a local run, and failed (``failRunQueueItem``, with the stage and reason) when
  the run fails before it starts, or when it is refused.
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

import copy
import json
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from launchctl import __version__
from launchctl.errors import UsageError
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
