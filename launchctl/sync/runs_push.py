"""A launchctl run as a W&B run, in the wire format W&B's own client speaks, and the per-run
cursor that makes pushing it resumable and idempotent (the sync engine's ``runs`` step).

What goes to the server, for one run, in this order (each piece recorded in the run's
cursor, ``launchctl/store/sync.py``, only after the server acknowledged it):

1. ``UpsertBucket`` (wandb/sdk/internal/internal_api.py ``Api.upsert_run``; the same
   document as core/api/graphql/mutation_run.graphql): ``name`` = the run id (as the run
   sees it in ``WANDB_RUN_ID``), ``displayName`` = the run name, entity, project,
   ``config`` as JSON in W&B's ``{key: {"value": v}}`` form (the run's ``run_config``),
   the spec's ``tags``, ``jobType`` ``launch``, ``host``, ``program`` (the entry point, or
   the job), and ``state``. Sent again whenever one of them changes (the state, mostly);
   a fingerprint of the variables is the cursor's ``upserted``.
2. ``CreateRunFiles`` for ``wandb-metadata.json`` and a PUT of it to the URL returned
   (internal_api.py ``Api.upload_urls``; core/internal/stream/sender.go
   ``uploadMetadataFile``), with the run's original start time as ``startedAt``
   (wandb_internal.proto ``EnvironmentRecord``'s JSON names).
3. The run's log as ``output.log`` lines through ``file_stream``
   (core/internal/filestream: ``{"files": {"output.log": {"offset": N, "content":
   [...]}}}``, N = lines the server has). Each line in W&B's plain console format
   (core/internal/runconsolelogs/runlogschangemodel.go ``LegacyFormat``: a UTC timestamp
   with microseconds, a space, the text; a carriage return keeps what a terminal would
   show, as file_stream.py ``CRDedupeFilePolicy`` does). launchctl's log does not time
   each line nor keep stderr apart, so every line carries the time the run started and
   no ``ERROR`` prefix. Chunks stay under ``MAX_CHUNK_BYTES``. A running run sends only
   whole lines; the last, unfinished one goes once the run has ended.
4. Once the run has ended: ``wandb-summary.json`` (``_runtime`` and ``_wandb.runtime``,
   the seconds it ran: launchctl records no metrics of its own; runs that logged with
   wandb are synced by ``wandb sync``, the ``wandb_offline`` step), then ``complete``
   with the exit code (core/internal/filestream/updateexit.go). A server derives the
   state from the exit code (0 finished, else failed), so a run that ended otherwise
   (killed, crashed) has its state upserted once more after ``complete``. Until
   ``complete`` is acknowledged, the upsert says ``running``: the server never shows a
   finished run with half its log.

States (``launchctl/states.py`` to W&B's names): running -> running; finished ->
finished; failed -> failed, or crashed when its agent was lost and its exit code is
unknown; stopped (cancelled) -> killed; preempted -> preempted (W&B's word for a run
that will be resumed); a run waiting to run again after an attempt -> pending.

Only runs of entities the syncing user is a member of are sent (``store/sync.py
candidates``): another user of a shared machine cannot push a team's logs to their own
server. Nothing of the store's own paths (working copy, log file) reaches the server.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from launchctl.follow import log_path
from launchctl.runners.logfile import read_log
from launchctl.runs import run_config
from launchctl.states import TERMINAL, State
from launchctl.store import Row, Store
from launchctl.store import sync as cursors
from launchctl.store.settings import SettingsTable
from launchctl.sync.engine import Owed, Sent, Target

if TYPE_CHECKING:
    from launchctl.sync.wire import WandbServer

STEP = "runs"
METADATA_FILE = "wandb-metadata.json"
OUTPUT_FILE = "output.log"
SUMMARY_FILE = "wandb-summary.json"
# A file_stream request carries at most this many bytes of log lines (W&B's core allows
# 10 MiB, core/internal/filestream/filestream.go defaultMaxRequestSizeBytes; smaller
# requests lose less when the network drops mid-way).
MAX_CHUNK_BYTES = int(os.environ.get("LAUNCHCTL_SYNC_CHUNK_BYTES", str(1 << 20)))

UPSERT_BUCKET = """
mutation UpsertBucket(
    $id: String,
    $name: String,
    $project: String,
    $entity: String,
    $groupName: String,
    $description: String,
    $displayName: String,
    $notes: String,
    $commit: String,
    $config: JSONString,
    $host: String,
    $debug: Boolean,
    $program: String,
    $repo: String,
    $jobType: String,
    $state: String,
    $sweep: String,
    $tags: [String!],
    $summaryMetrics: JSONString,
) {
    upsertBucket(input: {
        id: $id,
        name: $name,
        groupName: $groupName,
        modelName: $project,
        entityName: $entity,
        description: $description,
        displayName: $displayName,
        notes: $notes,
        config: $config,
        commit: $commit,
        host: $host,
        debug: $debug,
        jobProgram: $program,
        jobRepo: $repo,
        jobType: $jobType,
        state: $state,
        sweep: $sweep,
        tags: $tags,
        summaryMetrics: $summaryMetrics,
    }) {
        bucket {
            id
            name
            displayName
            project {
                id
                name
                entity {
                    id
                    name
                }
            }
        }
        inserted
    }
}
"""

CREATE_RUN_FILES = """
mutation CreateRunFiles(
    $entity: String!, $project: String!, $run: String!, $files: [String!]!
) {
    createRunFiles(
        input: {entityName: $entity, projectName: $project, runName: $run, files: $files}
    ) {
        runID
        uploadHeaders
        files {
            name
            uploadUrl
        }
    }
}
"""


# -- the mapping ------------------------------------------------------------------------------
def wandb_state(run: Row) -> str:
    """The run's state in W&B's words (see the module docstring)."""
    state = run["state"]
    if state == State.FINISHED:
        return "finished"
    if state == State.FAILED:
        lost = run.get("stage") == "agent" and str(run.get("reason") or "").startswith("agent lost")
        return "crashed" if lost else "failed"
    if state == State.STOPPED:
        return "killed"
    if state == State.PREEMPTED:
        return "preempted"
    if state == State.RUNNING:
        return "running"
    return "pending"  # queued, claimed, building, starting again after an attempt


def exit_code(run: Row) -> int:
    """The exit code ``complete`` carries: 0 for a finished run, else the run's own (1 when
    it has none, or none that says it failed)."""
    if run["state"] == State.FINISHED:
        return 0
    code = run.get("exit_code")
    return code if isinstance(code, int) and code != 0 and -(2**31) <= code < 2**31 else 1


def wandb_config(run: Row) -> dict[str, Any]:
    """``run_config`` in W&B's stored form (wandb/sdk/wandb_config.py: each key holds
    ``{"value": v}``; the public API reads ``value`` back)."""
    return {str(k): {"value": v} for k, v in run_config(run).items()}


def entry_point(run: Row) -> list[str]:
    entry = (run["spec"].get("overrides") or {}).get("entry_point")
    return [str(x) for x in entry] if isinstance(entry, list) else []


def program(run: Row) -> str | None:
    """What ran: the entry point as a command line, else the job or the image."""
    entry = entry_point(run)
    if entry:
        return shlex.join(entry)
    spec = run["spec"]
    return str(spec.get("job") or spec.get("docker", {}).get("docker_image") or run.get("image")
               or "") or None  # fmt: skip


def tags(run: Row) -> list[str] | None:
    value = run["spec"].get("tags")
    if isinstance(value, list) and value and all(isinstance(t, str) for t in value):
        return list(value)
    return None


def started_at(run: Row) -> float:
    """When the run first ran (its first attempt), else when it was created."""
    return float(run.get("first_running_at") or run.get("started_at") or run["created_at"])


def utc_iso(ts: float, *, zone: str = "Z") -> str:
    """UTC with microseconds, as W&B writes times (``2026-11-20T09:00:00.000000Z``)."""
    import datetime as dt

    moment = dt.datetime.fromtimestamp(ts, dt.UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds") + zone


def summary(run: Row) -> dict[str, Any] | None:
    """The summary of an ended run: how long it ran. None while it has not ended (the
    runtime of a running run would change at every sync)."""
    if run["state"] not in TERMINAL:
        return None
    start = run.get("first_running_at") or run.get("started_at")
    end = run.get("ended_at")
    runtime = max(0.0, float(end) - float(start)) if start and end else 0.0
    return {"_runtime": round(runtime, 3), "_wandb": {"runtime": int(runtime)}}


def upsert_variables(run: Row, entity: str, project: str) -> dict[str, Any]:
    """UpsertBucket's variables for ``run`` (internal_api.py ``Api.upsert_run``)."""
    config = wandb_config(run)
    done = summary(run)
    return {
        "id": None,
        "name": run["id"],
        "displayName": run["name"],
        "entity": entity,
        "project": project,
        "groupName": None,
        "description": None,
        "notes": None,
        "commit": None,
        "repo": None,
        "sweep": None,
        "debug": False,
        "config": json.dumps(config, sort_keys=True) if config else None,
        "host": run.get("host") or socket.gethostname(),
        "program": program(run),
        "jobType": "launch",
        "state": wandb_state(run),
        "tags": tags(run),
        "summaryMetrics": json.dumps(done, sort_keys=True) if done is not None else None,
    }


def metadata(run: Row, host: str) -> dict[str, Any]:
    """``wandb-metadata.json``: W&B's environment keys (wandb_internal.proto
    ``EnvironmentRecord``) that launchctl knows. No local paths."""
    spec = run["spec"]
    meta: dict[str, Any] = {
        "startedAt": utc_iso(started_at(run)),
        "host": host,
        "username": spec.get("author"),
        "program": program(run),
        "args": [str(a) for a in ((spec.get("overrides") or {}).get("args") or [])],
    }
    image = run.get("image")
    if image:
        meta["docker"] = image
    if host == socket.gethostname():  # this machine ran it: its OS is the run's
        import platform

        meta["os"] = platform.platform()
    return {k: v for k, v in meta.items() if v not in (None, "")}


def fingerprint(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# -- the log ----------------------------------------------------------------------------------
# W&B's core cuts a console line at this many characters
# (core/internal/runconsolelogs/runconsolelogs.go ``maxTerminalLineLength``).
MAX_LINE_CHARS = 4096
_READ = 1 << 16  # a log line is read in pieces of this size: a huge line never fills memory


def console_line(raw: bytes, stamp: str) -> str:
    """One log line in W&B's plain console format: ``TIMESTAMP TEXT``; of a line a
    carriage return rewrote, what the terminal showed last; cut at ``MAX_LINE_CHARS``."""
    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    if "\r" in text:
        text = text.rsplit("\r", 1)[-1]
    return f"{stamp} {text[:MAX_LINE_CHARS]}"


def log_lines(fh: BinaryIO, *, final: bool) -> Iterator[tuple[bytes, int]]:
    """The lines of an open log from where it stands: each as the bytes to show (a line
    longer than ``_READ`` keeps its start and its last piece, where a progress bar's final
    state is) and its length in the file. Without ``final``, an unfinished last line
    waits."""
    while True:
        piece = fh.readline(_READ)
        if not piece:
            return
        length, head = len(piece), piece
        tail: bytes | None = None  # after the last carriage return in a later piece
        more_text = b""  # what follows the head while no later piece has a carriage return
        while not piece.endswith(b"\n"):
            piece = fh.readline(_READ)
            if not piece:
                break
            length += len(piece)
            if b"\r" in piece:
                tail = piece.rsplit(b"\r", 1)[1]
            elif tail is not None:
                tail = (tail + piece)[:_READ]
            else:
                more_text = (more_text + piece)[:_READ]
        shown = head + b"\r" + tail if tail is not None else head + more_text
        if not piece.endswith(b"\n") and not final:
            return
        yield shown, length


def count_owed_lines(path: Path, start: int, *, final: bool) -> tuple[int, int]:
    """How many log lines (and bytes) from ``start`` a sync would send, without keeping
    them: ``sync status`` over many runs reads in blocks."""
    try:
        size = path.stat().st_size
    except OSError:
        return 0, 0
    if size <= start:
        return 0, 0
    lines = 0
    last = b""
    done = start
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            while block := fh.read(1 << 20):
                lines += block.count(b"\n")
                last = block
                done += len(block)
    except OSError:
        return 0, 0
    if last.endswith(b"\n") or not last:
        return lines, done - start
    if final:
        return lines + 1, done - start
    cut = len(last) - (last.rfind(b"\n") + 1)  # the unfinished line waits
    return lines, done - start - cut


# -- one run's plan ---------------------------------------------------------------------------
@dataclass
class Plan:
    """What one run owes one server, read from the run and its cursor."""

    run: Row
    entity: str
    project: str
    base_url: str
    variables: dict[str, Any]
    upsert_fp: str
    log: Path
    what: list[str] = field(default_factory=list)
    log_lines: int = 0  # lines owed
    log_bytes: int = 0  # bytes of log owed
    summary: dict[str, Any] | None = None
    summary_fp: str | None = None

    @property
    def remote(self) -> str:
        return f"{self.entity}/{self.project}/{self.run['id']}"

    @property
    def terminal(self) -> bool:
        return self.run["state"] in TERMINAL

    def detail(self) -> str:
        words = []
        for item in self.what:
            if item == "log":
                words.append(f"{self.log_lines} log line{'s' if self.log_lines != 1 else ''}"
                             f" ({human_size(self.log_bytes)})")  # fmt: skip
            else:
                words.append(item)
        return ", ".join(words)

    def owed(self) -> Owed:
        return Owed(
            step=STEP, run_id=self.run["id"], what=tuple(self.what), detail=self.detail(),
            remote=self.remote, bytes=self.log_bytes,
            extra={"state": wandb_state(self.run), "log_lines": self.log_lines},
        )  # fmt: skip


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"  # pragma: no cover


def used_wandb(run: Row) -> bool:
    """Whether the run logged with wandb offline (a ``wandb/offline-run-*`` folder in its
    working copy): then W&B's own ``wandb sync`` (the ``wandb_offline`` step) sends the
    run, its log and its metrics under the same run id, and this step leaves it alone."""
    workdir = run.get("workdir")
    if not workdir:
        return False
    try:
        return any(Path(workdir, "wandb").glob("offline-run-*"))
    except OSError:
        return False


def overrides(store: Store, target: Target) -> tuple[str | None, str | None]:
    """Where every run goes: ``--entity``/``--project``, else the store settings."""
    settings = SettingsTable(store.db)
    entity = target.entity or settings.get("sync.entity") or None
    project = target.project or settings.get("sync.project") or None
    return entity, project


def plans(store: Store, target: Target) -> list[Plan]:
    """Each candidate run with what it owes ``target``'s server (runs owing nothing too)."""
    entity, project = overrides(store, target)
    rows = cursors.candidates(
        store.db, user=target.user, base_url=target.base_url, entity=entity, project=project,
        since=target.since, run_ids=target.run_ids,
    )  # fmt: skip
    out = []
    for run in rows:
        if used_wandb(run):
            continue
        out.append(plan_run(store, run, target.base_url))
    return out


def plan_run(store: Store, run: Row, base_url: str) -> Plan:
    entity, project = str(run["target_entity"]), str(run["target_project"])
    variables = upsert_variables(run, entity, project)
    plan = Plan(
        run=run, entity=entity, project=project, base_url=base_url, variables=variables,
        upsert_fp=fingerprint(variables), log=log_path(store, run),
    )  # fmt: skip
    if run.get("c_upserted") != plan.upsert_fp:
        plan.what.append("upsert")
    if not run.get("c_metadata_sent"):
        plan.what.append("metadata")
    lines, size = count_owed_lines(plan.log, int(run.get("c_log_bytes") or 0), final=plan.terminal)
    if lines:
        plan.what.append("log")
        plan.log_lines, plan.log_bytes = lines, size
    plan.summary = summary(run)
    if plan.summary is not None:
        plan.summary_fp = fingerprint(plan.summary)
        if run.get("c_summary") != plan.summary_fp:
            plan.what.append("summary")
    if plan.terminal and not run.get("c_completed"):
        plan.what.append("complete")
    return plan


# -- the step ---------------------------------------------------------------------------------
def owed(store: Store, target: Target) -> list[Owed]:
    return [p.owed() for p in plans(store, target) if p.what]


def send(
    server: WandbServer,
    target: Target,
    *,
    progress: Callable[[Sent], None],
    dry_run: bool = False,
) -> list[Sent]:
    """Send every run's owed pieces, one run after another (see the module docstring)."""
    from launchctl.sync.wire import Unreachable

    out: list[Sent] = []
    for plan in plans(target.store, target):
        if not plan.what:
            continue
        if dry_run:
            item = Sent(STEP, plan.run["id"], tuple(plan.what), plan.remote, plan.log_bytes)
        else:
            tally = _Tally(server)
            try:
                push(server, target.store, plan, tally)
            except Unreachable:
                if tally.what:  # what went out before the network dropped is reported too
                    out.append(_sent(plan, tally))
                    progress(out[-1])
                raise
            item = _sent(plan, tally)
        out.append(item)
        progress(item)
    return out


class _Tally:
    """What of one run went out so far, for its ``Sent`` (also when the network drops)."""

    def __init__(self, server: WandbServer) -> None:
        self.server = server
        self.what: list[str] = []
        self.bytes = 0
        self.first_request = server.requests_sent

    def done(self, item: str, n_bytes: int = 0) -> None:
        if item not in self.what:
            self.what.append(item)
        self.bytes += n_bytes


def push(server: WandbServer, store: Store, plan: Plan, tally: _Tally) -> None:
    """Send what ``plan`` owes; each piece is recorded in the cursor once the server
    acknowledged it, and in ``tally``. When the network drops, the cursor holds what went
    out: the next sync goes on from there."""
    from launchctl.sync.wire import Refused

    run_id = plan.run["id"]

    def record(**fields: Any) -> None:
        cursors.advance(store.db, run_id, plan.base_url, plan.entity, plan.project, **fields)

    # Until ``complete`` is acknowledged the server shows the run running: a reader never
    # sees a finished run with half its log (a sync cut in the middle included).
    completing = "complete" in plan.what
    try:
        if "upsert" in plan.what:
            if completing and plan.variables["state"] != "running":
                server.graphql(UPSERT_BUCKET, {**plan.variables, "state": "running"})
                record(upserted=None, remote_url=plan.remote, last_error=None)
            else:
                upsert(server, plan)
                record(upserted=plan.upsert_fp, remote_url=plan.remote, last_error=None)
            tally.done("upsert")
        if "metadata" in plan.what:
            tally.done("metadata", upload_metadata(server, plan))
            record(metadata_sent=1)
        # The summary and ``complete`` ride on the last log request, as W&B's core merges
        # them (core/internal/filestream/filestreamstate.go ``Pop``: complete only once
        # nothing more is pending); one acknowledgement records them all.
        last: dict[str, Any] = {"files": {}}
        fields: dict[str, Any] = {}
        done: list[tuple[str, int]] = []
        if "summary" in plan.what and plan.summary is not None:
            content = json.dumps(plan.summary, sort_keys=True)
            last["files"][SUMMARY_FILE] = {"offset": 0, "content": [content]}
            fields["summary"] = plan.summary_fp
            done.append(("summary", len(content)))
        reassert = False
        if completing:
            last.update(complete=True, exitcode=exit_code(plan.run))
            fields["completed"] = 1
            done.append(("complete", 0))
            # The server sets the state from the exit code: say the real one again after.
            implied = "finished" if exit_code(plan.run) == 0 else "failed"
            reassert = plan.variables["state"] != implied
            fields["upserted"] = None if reassert else plan.upsert_fp
        stream_log(server, plan, record, tally, last=last, fields=fields, done=done)
        if reassert:
            upsert(server, plan)
            record(upserted=plan.upsert_fp)
    except Refused as exc:
        record(last_error=str(exc))
        raise


def _sent(plan: Plan, tally: _Tally) -> Sent:
    return Sent(
        STEP, plan.run["id"], tuple(tally.what), plan.remote, tally.bytes,
        requests=tally.server.requests_sent - tally.first_request,
        extra={"state": plan.variables["state"]},
    )  # fmt: skip


def upsert(server: WandbServer, plan: Plan) -> None:
    server.graphql(UPSERT_BUCKET, plan.variables)


def upload_metadata(server: WandbServer, plan: Plan) -> int:
    """CreateRunFiles + PUT of ``wandb-metadata.json``; the bytes uploaded."""
    from launchctl.sync.wire import Refused

    host = plan.variables["host"]
    body = json.dumps(metadata(plan.run, host), indent=2, sort_keys=True).encode()
    data = server.graphql(
        CREATE_RUN_FILES,
        {"entity": plan.entity, "project": plan.project, "run": plan.run["id"],
         "files": [METADATA_FILE]},
    )  # fmt: skip
    answer = (data or {}).get("createRunFiles") or {}
    files = {f.get("name"): f for f in answer.get("files") or [] if isinstance(f, dict)}
    url = (files.get(METADATA_FILE) or {}).get("uploadUrl")
    if not isinstance(url, str) or not url:
        raise Refused(f"the server gave no upload URL for {METADATA_FILE} of run {plan.remote}")
    headers = {}
    for header in answer.get("uploadHeaders") or []:  # "Name:Value" (internal_api.py upload_file)
        name, sep, value = str(header).partition(":")
        if sep and name.strip():
            headers[name.strip()] = value.strip()
    server.upload(url, body, headers)
    return len(body)


def stream_log(
    server: WandbServer,
    plan: Plan,
    record: Callable[..., None],
    tally: _Tally,
    *,
    last: dict[str, Any],
    fields: dict[str, Any],
    done: list[tuple[str, int]],
) -> None:
    """The owed log lines, in chunks of at most ``MAX_CHUNK_BYTES``; the cursor moves after
    each chunk the server acknowledged. A running run's unfinished last line waits.

    ``last`` (more files, ``complete``) goes with the last request, or alone when no line
    is owed; once acknowledged, ``fields`` are recorded and ``done`` tallied."""
    position = int(plan.run.get("c_log_bytes") or 0)  # the byte after the lines sent
    offset = int(plan.run.get("c_log_lines") or 0)  # the lines the server has
    stamp = utc_iso(started_at(plan.run), zone="")
    chunk: list[str] = []
    size = raw_size = 0

    def flush(final: bool) -> None:
        nonlocal offset, chunk, size, raw_size
        payload: dict[str, Any] = {"files": {}}
        if final:
            payload = {**last, "files": dict(last.get("files") or {})}
        if chunk:
            payload["files"][OUTPUT_FILE] = {"offset": offset, "content": chunk}
        if not payload["files"]:
            del payload["files"]
        if not payload:
            return
        server.file_stream(plan.entity, plan.project, plan.run["id"], payload)
        offset += len(chunk)
        record(log_lines=offset, log_bytes=position, **(fields if final else {}))
        if chunk:
            tally.done("log", raw_size)
        for item, n_bytes in done if final else ():
            tally.done(item, n_bytes)
        chunk, size, raw_size = [], 0, 0

    if "log" in plan.what:
        try:
            fh = read_log(plan.log)  # closed below, around the requests; never a FIFO
        except OSError:
            fh = None  # no log (yet), or not readable by this user: no line to send
        if fh is not None:
            with fh:
                fh.seek(position)
                for raw, length in log_lines(fh, final=plan.terminal):
                    text = console_line(raw, stamp)
                    if chunk and size + len(text) > MAX_CHUNK_BYTES:
                        flush(final=False)
                    chunk.append(text)
                    size += len(text) + 1
                    raw_size += length
                    position += length
    flush(final=True)


__all__ = [
    "MAX_CHUNK_BYTES", "Plan", "console_line", "exit_code", "metadata", "owed", "plans",
    "push", "send", "summary", "upsert_variables", "used_wandb", "wandb_config", "wandb_state",
]  # fmt: skip
