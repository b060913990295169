"""``launchctl agent --remote-queue``: this machine serves a W&B run queue.

``RemoteBridge`` registers the agent (``createLaunchAgent``), reports its state
(``updateLaunchAgent``: POLLING, RUNNING, KILLED), pops items (``popFromRunQueue``) while the
agent has room, and makes each a local run on the local queue of the same name (its admin's
config and guardrails apply), which the agent then runs with every local guarantee. The
item is acked (``ackRunQueueItem``, the run id as the W&B run name) when it became a local
run, and failed (``failRunQueueItem``, with the stage and reason) when the run fails before
it starts, or when it is refused. The wire operations, the documents and the outbox are in
``remote_queue.py``; why an item is acked early is said there.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from launchctl.errors import LaunchctlError, UsageError
from launchctl.states import TERMINAL
from launchctl.store.remote import RemoteTable
from launchctl.sync.remote_queue import (
    _GIT_URL,
    ADMIN_KEYS,
    DEFAULT_POLL_S,
    DROPPED_KEYS,
    HEARTBEAT_S,
    KILLED,
    POLLING,
    RUNNING,
    RemoteQueue,
    _server,
    _spec_of,
    create_agent,
    deliver,
    pop,
    update_agent,
)
from launchctl.sync.wire import Refused, SyncError, Unreachable, one_line

if TYPE_CHECKING:
    from launchctl.store import Store


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
