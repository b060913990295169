"""The stand-in W&B server's state (runs, files, run queues, launch agents) and the
GraphQL objects that expose it.

Each operation names the W&B client file whose document and field reads it was matched to
(wandb 0.31.0; the Go core's documents are in ``core/api/graphql/*.graphql`` of W&B's source).
All reads and writes go through ``State.lock``: the HTTP server is threaded.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.sync.standin.graphql import GraphQLError

Key = tuple[str, str, str]  # (entity, project, run name)

HISTORY = "wandb-history.jsonl"
SUMMARY = "wandb-summary.json"
EVENTS = "wandb-events.jsonl"
OUTPUT = "output.log"


def _gid(kind: str, *parts: object) -> str:
    """An opaque GraphQL ID, as W&B's are (base64 of the type and a key)."""
    return base64.b64encode(":".join([kind, *map(str, parts)]).encode()).decode()


def _iso(ts: float) -> str:
    # W&B's server answers createdAt/heartbeatAt like "2024-05-01T12:00:00" (UTC, no zone).
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _json_arg(value: Any, what: str) -> Any:
    if value is None or isinstance(value, (dict, list)):
        return value
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        raise GraphQLError(f"{what}: not a JSONString") from None


@dataclass
class StoredFile:
    name: str
    data: bytes | None = None  # None until uploaded
    uploaded_at: float | None = None
    upload_count: int = 0


@dataclass
class Run:
    entity: str
    project: str
    name: str
    storage_id: str
    display_name: str | None = None
    state: str = "running"
    config: dict[str, Any] = field(default_factory=dict)  # W&B's {key: {"value": v, "desc": ...}}
    summary: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    group: str | None = None
    job_type: str | None = None
    host: str | None = None
    program: str | None = None
    repo: str | None = None
    commit: str | None = None
    notes: str | None = None
    description: str | None = None
    sweep: str | None = None
    exitcode: int | None = None
    created_at: float = field(default_factory=time.time)
    heartbeat_at: float = field(default_factory=time.time)
    # file_stream files, one list of lines each (wandb-history.jsonl, output.log, ...)
    streams: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, StoredFile] = field(default_factory=dict)
    upserts: int = 0

    @property
    def key(self) -> Key:
        return (self.entity, self.project, self.name)

    @property
    def history(self) -> list[dict[str, Any]]:
        """History rows as dicts (lines the stand-in cannot read are skipped)."""
        rows = []
        for line in self.streams.get(HISTORY, []):
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
        return rows

    @property
    def output_lines(self) -> list[str]:
        return list(self.streams.get(OUTPUT, []))

    @property
    def config_values(self) -> dict[str, Any]:
        """The config as plain values ({key: value}, W&B's ``_wandb`` left out)."""
        return {
            k: (v.get("value") if isinstance(v, dict) else v)
            for k, v in self.config.items()
            if k != "_wandb"
        }


@dataclass
class QueueItem:
    id: str
    queue_id: str
    run_spec: str  # JSONString as pushed
    priority: int
    template_variables: str | None
    state: str = "PENDING"  # PENDING -> LEASED (popped) -> CLAIMED (acked) | FAILED
    associated_run_id: str | None = None
    launch_agent_id: str | None = None
    error_message: str | None = None
    error_stage: str | None = None
    error_files: list[str] | None = None
    warnings: list[dict[str, Any]] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)
    pushed_by: str | None = None


@dataclass
class RunQueue:
    id: str
    entity: str
    project: str
    name: str
    access: str = "PROJECT"
    created_by: str | None = None
    prioritization_mode: str | None = "V0"
    resource_type: str | None = None
    resource_config: str | None = None
    template_variables: str | None = None
    items: list[QueueItem] = field(default_factory=list)


@dataclass
class LaunchAgent:
    id: str
    name: str
    entity: str
    project: str
    queue_ids: list[str]
    hostname: str
    config: str | None
    version: str | None
    status: str = "POLLING"
    stop_polling: bool = False
    created_at: float = field(default_factory=time.time)
    heartbeat_at: float = field(default_factory=time.time)
    statuses: list[str] = field(default_factory=list)  # every agentStatus sent, in order


class State:
    """Everything the stand-in holds. ``users`` maps an API key to a username; ``members``,
    when it names an entity, lists who may write to it (anyone may otherwise)."""

    def __init__(self, users: dict[str, str], members: dict[str, set[str]] | None = None) -> None:
        self.lock = threading.RLock()
        self.users = users
        self.members = members or {}
        self.runs: dict[Key, Run] = {}
        self.projects: dict[tuple[str, str], int] = {}  # numeric id, as W&B's projectId
        self.project_created: dict[tuple[str, str], float] = {}
        self.queues: dict[str, RunQueue] = {}
        self.items: dict[str, QueueItem] = {}
        self.agents: dict[str, LaunchAgent] = {}
        self.upload_tokens: dict[str, tuple[Key, str]] = {}
        self._seq = 0
        self.base_url = ""

    def ensure_project(self, entity: str, project: str) -> int:
        if (entity, project) not in self.projects:
            self.projects[(entity, project)] = len(self.projects) + 1
            self.project_created[(entity, project)] = time.time()
        return self.projects[(entity, project)]

    def next_id(self) -> int:
        self._seq += 1
        return self._seq

    # ------------------------------------------------------------ lookups

    def check_member(self, user: str | None, entity: str) -> None:
        allowed = self.members.get(entity)
        if allowed is not None and user not in allowed:
            raise GraphQLError(f"permission denied: {user} is not a member of entity {entity}")

    def run(self, entity: str, project: str, name: str) -> Run | None:
        return self.runs.get((entity, project, name))

    def queue(self, entity: str, project: str, name: str) -> RunQueue | None:
        for q in self.queues.values():
            if (q.entity, q.project, q.name) == (entity, project, name):
                return q
        return None

    def add_queue(
        self,
        entity: str,
        project: str,
        name: str,
        *,
        created_by: str | None = None,
        access: str = "PROJECT",
    ) -> RunQueue:
        with self.lock:
            q = self.queue(entity, project, name)
            if q is None:
                qid = _gid("RunQueue", self.next_id())
                q = RunQueue(qid, entity, project, name, access=access, created_by=created_by)
                self.queues[qid] = q
                self.ensure_project(entity, project)
            return q

    # ------------------------------------------------------------ runs

    def upsert_bucket(self, user: str | None, inp: dict[str, Any]) -> tuple[Run, bool]:
        """UpsertBucket (wandb-core core/api/graphql/mutation_run.graphql): create the run
        named ``name`` in entity/project (``modelName`` is the project), or update the one
        whose ``id`` or name matches; only the arguments given change."""
        entity = inp.get("entityName") or (user or "")
        project = inp.get("modelName") or "uncategorized"
        run: Run | None = None
        if inp.get("id"):
            run = next((r for r in self.runs.values() if r.storage_id == inp["id"]), None)
            if run is None:
                raise GraphQLError(f"run with id {inp['id']} not found")
            entity, project = run.entity, run.project
        self.check_member(user, entity)
        name = inp.get("name") or (run.name if run else secrets.token_hex(4))
        run = run or self.run(entity, project, name)
        inserted = run is None
        if run is None:
            run = Run(entity, project, name, _gid("Run", "v1", name, project, entity))
            self.runs[run.key] = run
            self.ensure_project(entity, project)
        run.upserts += 1
        simple = {
            "displayName": "display_name",
            "groupName": "group",
            "jobType": "job_type",
            "host": "host",
            "jobProgram": "program",
            "jobRepo": "repo",
            "commit": "commit",
            "notes": "notes",
            "description": "description",
            "sweep": "sweep",
            "state": "state",
        }
        for arg, attr in simple.items():
            if inp.get(arg) is not None:
                setattr(run, attr, inp[arg])
        if inp.get("tags") is not None:
            run.tags = list(inp["tags"])
        if inp.get("config") is not None:
            config = _json_arg(inp["config"], "config")
            if not isinstance(config, dict):
                raise GraphQLError("config: not a JSON object")
            run.config = config
        if inp.get("summaryMetrics") is not None:
            summary = _json_arg(inp["summaryMetrics"], "summaryMetrics")
            if not isinstance(summary, dict):
                raise GraphQLError("summaryMetrics: not a JSON object")
            run.summary = summary
        run.heartbeat_at = time.time()
        return run, inserted

    def file_stream(self, user: str | None, key: Key, body: dict[str, Any]) -> dict[str, Any]:
        """POST /files/{entity}/{project}/{run}/file_stream (wandb-core core/internal/filestream:
        FileStreamRequestJSON): each file's ``content`` lines replace the lines from ``offset``
        on, so a chunk sent twice changes nothing; ``complete`` with ``exitcode`` ends the run
        (0 finished, anything else failed); the summary file's last line is the summary."""
        run = self.runs.get(key)
        if run is None:
            raise LookupError(f"run {'/'.join(key)} not found")
        self.check_member(user, run.entity)
        files = body.get("files") or {}
        if not isinstance(files, dict):
            raise ValueError("files: not an object")
        for name, chunk in files.items():
            offset = int(chunk.get("offset", 0))
            content = [str(line) for line in chunk.get("content") or []]
            lines = run.streams.setdefault(str(name), [])
            if offset > len(lines):  # a gap: W&B's server pads; keep lines where they belong
                lines.extend([""] * (offset - len(lines)))
            lines[offset : offset + len(content)] = content
            if name == SUMMARY and content:
                try:
                    summary = json.loads(content[-1])
                except ValueError:
                    summary = None
                if isinstance(summary, dict):
                    run.summary = summary
        for name in body.get("uploaded") or []:
            stored = run.files.setdefault(str(name), StoredFile(str(name)))
            stored.uploaded_at = stored.uploaded_at or time.time()
        run.heartbeat_at = time.time()
        if body.get("complete"):
            code = body.get("exitcode")
            run.exitcode = int(code) if code is not None else None
            run.state = "finished" if not code else "failed"
        elif body.get("preempting"):
            run.state = "preempting"
        return {"exitcode": None, "limits": {}}

    def create_run_files(self, user: str | None, inp: dict[str, Any]) -> dict[str, Any]:
        """CreateRunFiles (core/api/graphql/mutation_create_run_files.graphql): one upload
        URL per file, pointing back at the stand-in (``PUT {base}/storage/{token}``)."""
        run = self.run(
            inp.get("entityName") or "", inp.get("projectName") or "", inp.get("runName") or ""
        )
        if run is None:
            raise GraphQLError("run not found")
        self.check_member(user, run.entity)
        out = []
        for name in inp.get("files") or []:
            token = secrets.token_urlsafe(12)
            self.upload_tokens[token] = (run.key, name)
            run.files.setdefault(name, StoredFile(name))
            out.append({"name": name, "uploadUrl": f"{self.base_url}/storage/{token}"})
        return {"runID": run.storage_id, "uploadHeaders": [], "files": out}

    def store_upload(self, token: str, data: bytes) -> bool:
        target = self.upload_tokens.get(token)
        if target is None:
            return False
        key, name = target
        run = self.runs[key]
        stored = run.files.setdefault(name, StoredFile(name))
        stored.data = data
        stored.uploaded_at = time.time()
        stored.upload_count += 1
        return True

    def download(self, token: str) -> bytes | None:
        target = self.upload_tokens.get(token)
        if target is None:
            return None
        key, name = target
        stored = self.runs[key].files.get(name)
        return stored.data if stored else None

    # ------------------------------------------------------------ queues

    def push(self, user: str | None, queue: RunQueue, inp: dict[str, Any]) -> QueueItem:
        """pushToRunQueueByName / pushToRunQueue (wandb/sdk/launch/api.py)."""
        self.check_member(user, queue.entity)
        spec = inp.get("runSpec")
        if isinstance(spec, (dict, list)):
            spec = json.dumps(spec)
        if not isinstance(spec, str) or not isinstance(_json_arg(spec, "runSpec"), dict):
            raise GraphQLError("runSpec: not a JSON object")
        tv = inp.get("templateVariableValues")
        if tv is not None and not isinstance(tv, str):
            tv = json.dumps(tv)
        priority = inp.get("priority")
        item = QueueItem(
            id=_gid("RunQueueItem", self.next_id()),
            queue_id=queue.id,
            run_spec=spec,
            priority=2 if priority is None else int(priority),  # W&B's default: medium (2)
            template_variables=tv,
            pushed_by=user,
        )
        queue.items.append(item)
        self.items[item.id] = item
        return item

    def pop(self, user: str | None, queue: RunQueue, agent_id: str | None) -> QueueItem | None:
        """popFromRunQueue (wandb/sdk/launch/api.py pop_from_run_queue): the pending item
        of the highest priority (lowest number), oldest first, leased to the caller."""
        self.check_member(user, queue.entity)
        pending = [i for i in queue.items if i.state == "PENDING"]
        if not pending:
            return None
        item = min(pending, key=lambda i: (i.priority, i.created_at, i.id))
        item.state = "LEASED"
        item.launch_agent_id = agent_id
        return item


# ---------------------------------------------------------------- GraphQL objects


def _queue_path(inp: dict[str, Any]) -> str:
    return f"{inp.get('entityName')}/{inp.get('projectName')}/{inp.get('queueName')}"


def _sample(rows: list[Any], samples: int | None) -> list[Any]:
    if samples is None or samples <= 0 or len(rows) <= samples:
        return rows
    if samples == 1:
        return rows[-1:]
    step = (len(rows) - 1) / (samples - 1)
    return [rows[round(i * step)] for i in range(samples)]


def _history_keys(run: Run) -> dict[str, Any]:
    keys: dict[str, dict[str, Any]] = {}
    last = -1
    for row in run.history:
        for k, v in row.items():
            kind = (
                "number"
                if isinstance(v, (int, float)) and not isinstance(v, bool)
                else type(v).__name__
            )
            counts = keys.setdefault(k, {"typeCounts": []})["typeCounts"]
            for c in counts:
                if c["type"] == kind:
                    c["count"] += 1
                    break
            else:
                counts.append({"type": kind, "count": 1})
        step = row.get("_step")
        if isinstance(step, int):
            last = max(last, step)
    return {"keys": keys, "lastStep": last}


def _match(run: Run, flt: Any) -> bool:
    """The few run filters W&B's public API sends (MongoDB-like JSON); others are refused."""
    if not flt:
        return True
    if not isinstance(flt, dict):
        raise GraphQLError("filters: not a JSON object")
    for k, cond in flt.items():
        if k == "$and":
            if not all(_match(run, c) for c in cond):
                return False
            continue
        if k == "$or":
            if not any(_match(run, c) for c in cond):
                return False
            continue
        if k in ("state", "name", "displayName", "display_name", "jobType", "group", "host"):
            value: Any = {
                "state": run.state,
                "name": run.name,
                "displayName": run.display_name,
                "display_name": run.display_name,
                "jobType": run.job_type,
                "group": run.group,
                "host": run.host,
            }[k]
        elif k == "tags":
            value = run.tags
        elif k.startswith("config.") and k.endswith(".value"):
            value = run.config_values.get(k[len("config.") : -len(".value")])
        elif k.startswith("summary_metrics."):
            value = run.summary.get(k[len("summary_metrics.") :])
        else:
            raise GraphQLError(f"filters: the stand-in does not support filtering on {k!r}")
        if isinstance(cond, dict):
            for opname, arg in cond.items():
                if opname == "$in":
                    ok = any(v in arg for v in value) if isinstance(value, list) else value in arg
                elif opname == "$nin":
                    ok = not (
                        any(v in arg for v in value) if isinstance(value, list) else value in arg
                    )
                elif opname == "$ne":
                    ok = value != arg
                elif opname == "$eq":
                    ok = value == arg
                else:
                    raise GraphQLError(f"filters: the stand-in does not support {opname!r}")
                if not ok:
                    return False
        elif isinstance(value, list):
            if cond not in value:
                return False
        elif value != cond:
            return False
    return True


class Schema:
    """Builds the GraphQL objects for one request (``user`` is whom the key belongs to)."""

    def __init__(self, state: State, user: str | None) -> None:
        self.s = state
        self.user = user

    # -------------------------------------------------------- objects

    def entity(self, name: str) -> dict[str, Any]:
        return {
            "__typename": "Entity",
            "id": _gid("Entity", name),
            "name": name,
            "isTeam": name != self.user,
            "defaultAccess": "PROJECT",
            "project": lambda a: self.project(name, a.get("name") or "uncategorized"),
        }

    def project(self, entity: str, name: str) -> dict[str, Any] | None:
        s = self.s
        if (entity, name) not in s.projects:
            return None

        def runs(a: dict[str, Any]) -> dict[str, Any]:
            matching = self._runs(entity, name, a.get("filters"), a.get("order"))
            start = int(a["after"]) if a.get("after") else 0
            first = a.get("first") or 50
            page = matching[start : start + first]
            edges = [
                {"node": self.run(r), "cursor": str(start + i + 1)} for i, r in enumerate(page)
            ]
            return {
                "edges": edges,
                "totalCount": len(matching),
                "pageInfo": {
                    "endCursor": str(start + len(page)),
                    "hasNextPage": start + len(page) < len(matching),
                },
            }

        def run(a: dict[str, Any]) -> dict[str, Any] | None:
            r = s.run(entity, name, a.get("name") or "")
            return self.run(r) if r else None

        return {
            "__typename": "Project",
            "id": _gid("Project", entity, name),
            "internalId": str(s.projects[(entity, name)]),
            "name": name,
            "entityName": entity,
            "readOnly": False,
            "createdAt": _iso(s.project_created[(entity, name)]),
            "entity": self.entity(entity),
            "run": run,
            "bucket": run,
            "runs": runs,
            "buckets": runs,
            "runCount": lambda a: len(self._runs(entity, name, a.get("filters"), None)),
            "runQueues": [
                self.queue(q) for q in s.queues.values() if (q.entity, q.project) == (entity, name)
            ],
            "runQueue": lambda a: (lambda q: self.queue(q) if q else None)(
                s.queue(entity, name, a.get("name") or "")
            ),
        }

    def _runs(self, entity: str, project: str, filters: Any, order: str | None) -> list[Run]:
        flt = _json_arg(filters, "filters") if filters else None
        runs = [r for r in self.s.runs.values() if (r.entity, r.project) == (entity, project)]
        runs = [r for r in runs if _match(r, flt)]
        reverse = not (order or "-created_at").startswith("+")
        runs.sort(key=lambda r: (r.created_at, r.name), reverse=reverse)
        return runs

    def run(self, r: Run) -> dict[str, Any]:
        def history(a: dict[str, Any]) -> list[str]:
            rows = r.streams.get(HISTORY, [])
            lo, hi = a.get("minStep"), a.get("maxStep")
            if lo is not None or hi is not None:
                picked = []
                for line in rows:
                    try:
                        step = json.loads(line).get("_step")
                    except (ValueError, AttributeError):
                        continue
                    if (
                        isinstance(step, int)
                        and (lo is None or step >= lo)
                        and (hi is None or step < hi)
                    ):
                        picked.append(line)
                return picked[: a.get("samples") or len(picked)]
            return _sample(rows, a.get("samples"))

        def sampled(a: dict[str, Any]) -> list[list[dict[str, Any]]]:
            out = []
            for spec_text in a.get("specs") or []:
                spec = _json_arg(spec_text, "specs") or {}
                keys = spec.get("keys") or []
                wanted = [k for k in keys[1:]] if len(keys) > 1 else []
                rows = []
                for row in r.history:
                    if wanted and not all(k in row for k in wanted):
                        continue
                    rows.append({k: row[k] for k in keys if k in row} if keys else row)
                out.append(_sample(rows, spec.get("samples")))
            return out

        def files(a: dict[str, Any]) -> dict[str, Any]:
            names = a.get("names") or []
            chosen = [
                f for f in r.files.values() if f.data is not None and (not names or f.name in names)
            ]
            start = int(a["after"]) if a.get("after") else 0
            first = a.get("first") or 50
            page = chosen[start : start + first]
            return {
                "edges": [
                    {"node": self.file(r, f), "cursor": str(start + i + 1)}
                    for i, f in enumerate(page)
                ],
                "pageInfo": {
                    "endCursor": str(start + len(page)),
                    "hasNextPage": start + len(page) < len(chosen),
                },
            }

        history_rows = r.streams.get(HISTORY, [])
        events = r.streams.get(EVENTS, [])
        return {
            "__typename": "Run",
            "id": r.storage_id,
            "name": r.name,
            "displayName": r.display_name or r.name,
            "state": r.state,
            "config": json.dumps(r.config),
            "summaryMetrics": json.dumps(r.summary),
            "systemMetrics": json.dumps({}),
            "tags": list(r.tags),
            "group": r.group,
            "jobType": r.job_type,
            "host": r.host,
            "program": r.program,
            "commit": r.commit,
            "notes": r.notes,
            "description": r.description,
            "sweepName": r.sweep,
            "readOnly": False,
            "stopped": False,
            "exitcode": r.exitcode,
            "createdAt": _iso(r.created_at),
            "heartbeatAt": _iso(r.heartbeat_at),
            "projectId": str(self.s.projects[(r.entity, r.project)]),
            "project": self.project(r.entity, r.project),
            "user": {"__typename": "User", "name": r.entity, "username": r.entity},
            "historyLineCount": len(history_rows),
            "logLineCount": len(r.streams.get(OUTPUT, [])),
            "eventsLineCount": len(events),
            "historyTail": json.dumps(history_rows[-10:]),
            "eventsTail": json.dumps(events[-10:]),
            "historyKeys": _history_keys(r),
            "history": history,
            "events": lambda a: _sample(events, a.get("samples")),
            "sampledHistory": sampled,
            "parquetHistory": lambda a: {
                "parquetUrls": [],
                "liveData": [json.loads(x) for x in history_rows],
            },
            "wandbConfig": lambda a: json.dumps(
                {k: r.config[k] for k in (a.get("keys") or r.config) if k in r.config}
            ),
            "files": files,
            "fileCount": sum(1 for f in r.files.values() if f.data is not None),
        }

    def file(self, r: Run, f: StoredFile) -> dict[str, Any]:
        token = next(
            (t for t, (k, n) in self.s.upload_tokens.items() if k == r.key and n == f.name), None
        )
        url = f"{self.s.base_url}/storage/{token}" if token else None
        return {
            "__typename": "File",
            "id": _gid("File", *r.key, f.name),
            "name": f.name,
            "url": url,
            "directUrl": url,
            "sizeBytes": len(f.data or b""),
            "mimetype": "application/octet-stream",
            "updatedAt": _iso(f.uploaded_at or time.time()),
            "md5": base64.b64encode(__import__("hashlib").md5(f.data or b"").digest()).decode(),
        }

    def queue(self, q: RunQueue) -> dict[str, Any]:
        return {
            "__typename": "RunQueue",
            "id": q.id,
            "name": q.name,
            "access": q.access,
            "createdBy": q.created_by,
            "prioritizationMode": q.prioritization_mode,
            "entityName": q.entity,
            "projectName": q.project,
            "runQueueItems": {
                "edges": [{"node": self.item(i)} for i in q.items],
            },
        }

    def item(self, i: QueueItem) -> dict[str, Any]:
        return {
            "__typename": "RunQueueItem",
            "id": i.id,
            "runSpec": i.run_spec,
            "state": i.state,
            "priority": i.priority,
            "templateVariableValues": i.template_variables,
            "associatedRunId": i.associated_run_id,
            "launchAgentId": i.launch_agent_id,
            "createdAt": _iso(i.created_at),
            "error": (
                {"message": i.error_message, "stage": i.error_stage, "filePaths": i.error_files}
                if i.state == "FAILED"
                else None
            ),
            "warnings": list(i.warnings),
        }

    def agent(self, a: LaunchAgent) -> dict[str, Any]:
        return {
            "__typename": "LaunchAgent",
            "id": a.id,
            "name": a.name,
            "runQueues": list(a.queue_ids),
            "hostname": a.hostname,
            "agentStatus": a.status,
            "stopPolling": a.stop_polling,
            "heartbeatAt": _iso(a.heartbeat_at),
            "version": a.version,
            "agentConfig": a.config,
        }

    def viewer(self) -> dict[str, Any] | None:
        if self.user is None:
            return None
        teams = sorted(
            e for e, who in self.s.members.items() if self.user in who and e != self.user
        )
        return {
            "__typename": "User",
            "id": _gid("User", self.user),
            "entity": self.user,
            "username": self.user,
            "name": self.user,
            "email": f"{self.user}@example.invalid",
            "admin": False,
            "flags": json.dumps({}),
            "userInfo": None,
            "teams": {"edges": [{"node": {"name": t}} for t in teams]},
            "defaultFramework": None,
        }

    # -------------------------------------------------------- roots

    def query_root(self) -> dict[str, Any]:
        s = self.s

        def project(a: dict[str, Any]) -> dict[str, Any] | None:
            entity = a.get("entityName") or self.user or ""
            return self.project(entity, a.get("name") or "uncategorized")

        def launch_agent(a: dict[str, Any]) -> dict[str, Any] | None:
            found = s.agents.get(a.get("id") or "")
            return self.agent(found) if found else None

        return {
            "__typename": "Query",
            "viewer": lambda a: self.viewer(),
            "serverInfo": {
                "__typename": "ServerInfo",
                # No optional features: wandb-core then takes its plain, long-supported paths.
                "features": [],
                "cliVersionInfo": json.dumps({}),
                "latestLocalVersionInfo": None,
                "availableBucketProviders": [],
                "frontendHost": None,
            },
            "project": project,
            "model": project,
            "entity": lambda a: self.entity(a.get("name") or ""),
            "launchAgent": launch_agent,
        }

    def mutation_root(self) -> dict[str, Any]:
        s, user = self.s, self.user

        def upsert_bucket(a: dict[str, Any]) -> dict[str, Any]:
            run, inserted = s.upsert_bucket(user, a.get("input") or {})
            node = self.run(run)
            return {"bucket": node, "inserted": inserted, "updateAvailable": False}

        def push_by_name(a: dict[str, Any]) -> dict[str, Any]:
            inp = a.get("input") or {}
            q = s.queue(
                inp.get("entityName") or "",
                inp.get("projectName") or "",
                inp.get("queueName") or "",
            )
            if q is None:
                raise GraphQLError(f"run queue {_queue_path(inp)} not found")
            item = s.push(user, q, inp)
            return {"runQueueItemId": item.id, "runSpec": item.run_spec}

        def push_by_id(a: dict[str, Any]) -> dict[str, Any]:
            inp = a.get("input") or {}
            q = s.queues.get(inp.get("queueID") or "")
            if q is None:
                raise GraphQLError("run queue not found")
            item = s.push(user, q, inp)
            return {"runQueueItemId": item.id}

        def pop(a: dict[str, Any]) -> dict[str, Any] | None:
            inp = a.get("input") or {}
            q = s.queue(
                inp.get("entityName") or "",
                inp.get("projectName") or "",
                inp.get("queueName") or "",
            )
            if q is None:
                raise GraphQLError(f"run queue {_queue_path(inp)} not found")
            item = s.pop(user, q, inp.get("launchAgentId"))
            return {"runQueueItemId": item.id, "runSpec": item.run_spec} if item else None

        def item_for(inp: dict[str, Any]) -> QueueItem:
            item = s.items.get(inp.get("runQueueItemId") or "")
            if item is None:
                raise GraphQLError("run queue item not found")
            s.check_member(user, s.queues[item.queue_id].entity)
            return item

        def ack(a: dict[str, Any]) -> dict[str, Any]:
            inp = a.get("input") or {}
            item = item_for(inp)
            if item.state != "LEASED":  # acked already, never popped, or failed
                return {"success": False}
            item.state = "CLAIMED"
            item.associated_run_id = inp.get("runName")
            return {"success": True}

        def fail(a: dict[str, Any]) -> dict[str, Any]:
            inp = a.get("input") or {}
            item = item_for(inp)
            item.state = "FAILED"
            item.error_message = inp.get("message")
            item.error_stage = inp.get("stage")
            item.error_files = inp.get("filePaths")
            return {"success": True}

        def warn(a: dict[str, Any]) -> dict[str, Any]:
            inp = a.get("input") or {}
            item = item_for(inp)
            item.warnings.append({"message": inp.get("message"), "stage": inp.get("stage")})
            return {"success": True}

        def create_agent(a: dict[str, Any]) -> dict[str, Any]:
            inp = a.get("input") or {}
            entity, project = inp.get("entityName") or "", inp.get("projectName") or ""
            s.check_member(user, entity)
            queue_ids = list(inp.get("runQueues") or [])
            for qid in queue_ids:
                if qid not in s.queues:
                    raise GraphQLError(f"run queue {qid} not found")
            n = s.next_id()
            agent = LaunchAgent(
                id=_gid("LaunchAgent", n),
                name=f"agent-{n}",
                entity=entity,
                project=project,
                queue_ids=queue_ids,
                hostname=inp.get("hostname") or "",
                config=inp.get("agentConfig"),
                version=inp.get("version"),
            )
            s.agents[agent.id] = agent
            return {"launchAgentId": agent.id, "name": agent.name}

        def update_agent(a: dict[str, Any]) -> dict[str, Any]:
            inp = a.get("input") or {}
            agent = s.agents.get(inp.get("launchAgentId") or "")
            if agent is None:
                return {"success": False}
            if inp.get("agentStatus") is not None:
                agent.status = inp["agentStatus"]
            agent.statuses.append(agent.status)
            agent.heartbeat_at = time.time()
            return {"success": True}

        def create_queue(a: dict[str, Any]) -> dict[str, Any]:
            inp = a.get("input") or {}
            entity = inp.get("entityName") or ""
            s.check_member(user, entity)
            q = s.add_queue(
                entity,
                inp.get("projectName") or "",
                inp.get("queueName") or "",
                created_by=user,
                access=inp.get("access") or "PROJECT",
            )
            if inp.get("prioritizationMode"):
                q.prioritization_mode = inp["prioritizationMode"]
            return {"success": True, "queueID": q.id}

        def upsert_queue(a: dict[str, Any]) -> dict[str, Any]:
            inp = a.get("input") or {}
            entity = inp.get("entityName") or ""
            s.check_member(user, entity)
            q = s.add_queue(
                entity, inp.get("projectName") or "", inp.get("queueName") or "", created_by=user
            )
            q.resource_type = inp.get("resourceType")
            q.resource_config = inp.get("resourceConfig")
            q.template_variables = inp.get("templateVariables")
            return {"success": True, "configSchemaValidationErrors": None}

        def create_run_files(a: dict[str, Any]) -> dict[str, Any]:
            return s.create_run_files(user, a.get("input") or {})

        def mark_uploaded(a: dict[str, Any]) -> dict[str, Any]:
            return {"success": True}

        return {
            "__typename": "Mutation",
            "upsertBucket": upsert_bucket,
            "createRunFiles": create_run_files,
            "markRunFilesUploaded": mark_uploaded,
            "pushToRunQueueByName": push_by_name,
            "pushToRunQueue": push_by_id,
            "popFromRunQueue": pop,
            "ackRunQueueItem": ack,
            "failRunQueueItem": fail,
            "updateRunQueueItemWarning": warn,
            "createLaunchAgent": create_agent,
            "updateLaunchAgent": update_agent,
            "createRunQueue": create_queue,
            "upsertRunQueue": upsert_queue,
        }
