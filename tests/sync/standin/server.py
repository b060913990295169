"""A STAND-IN for W&B's server, for tests and benchmarks only: not W&B's server.

It answers what W&B's own client sends, on a loopback port, and was checked against the
traffic of wandb 0.31.0 (the Python package in .venv) and the wandb-core Go binary that
release ships (``wandb.Api()``, ``wandb sync`` of an offline run, and the launch API). What
it does is what those clients need and read; W&B's real server does more, and may answer
differently where the client does not look.

Endpoints (matched to the client code named):

- ``POST /graphql``: GraphQL, dispatched by ``operationName`` (wandb-core and the Python
  public API always send it; a document with one operation is run without it). Operations
  and the client documents they were matched to:

  - ``UpsertBucket``: core/api/graphql/mutation_run.graphql (create or update a run; name =
    run id; ``state`` honoured; config replaced, in W&B's ``{key: {"value": v}}`` form).
  - ``CreateRunFiles`` (+ ``PUT /storage/{token}``): mutation_create_run_files.graphql;
    ``MarkRunFilesUploaded``: mutation_mark_run_files_uploaded.graphql.
  - ``Viewer``: query_viewer.graphql; ``ServerInfo`` / ``ServerFeaturesQuery``:
    query_server_info.graphql, query_server_features.graphql (no optional features).
  - ``RunResumeStatus`` (``model``/``bucket``): query_run_resume_status.graphql.
  - ``Run``, ``Runs``, ``RunFullHistory``, ``RunSampledHistory``, ``RunHistoryKeys``,
    ``RunState``: wandb/apis/public/runs.py; ``HistoryPage``, ``SampledHistoryPage``,
    ``RunParquetHistory``: core/api/graphql/query_runhistory_backend*.graphql,
    query_parquethistory.graphql (no parquet files: all history is "live data").
  - ``pushToRunQueueByName``, ``pushToRunQueue``, ``popFromRunQueue``, ``ackRunQueueItem``,
    ``failRunQueueItem``, ``updateRunQueueItemWarning``, ``createLaunchAgent``,
    ``updateLaunchAgent``, ``LaunchAgent``, ``ProjectRunQueues``, ``EntityIsTeam``,
    ``RunStoppedStatus``: wandb/sdk/launch/api.py; ``CreateRunQueue``, ``UpsertRunQueue``:
    core/api/graphql/mutation_run_queue.graphql.

- ``POST /files/{entity}/{project}/{run}/file_stream``: core/internal/filestream
  (FileStreamRequestJSON): per-file ``offset`` + ``content`` lines replace the lines from
  ``offset`` (a resent chunk changes nothing); ``complete`` + ``exitcode`` end the run,
  ``finished`` for 0 and ``failed`` otherwise; history lines are rows; the summary file's
  last line is the summary. Gzip bodies are read.

Authentication is HTTP basic ``api:KEY`` with a key from ``users`` (401 otherwise), as
W&B's clients send it; upload URLs carry their own token, as signed URLs do.

Faults for the tests of a client: ``fail_next(n, status)``, ``stop()``/``start()`` (same
port), ``cut_after(n)``, ``delay``. Every request is recorded in ``requests``; a field
or operation the stand-in does not know is recorded in ``unknown``.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.sync.standin.graphql import GraphQLError, execute
from tests.sync.standin.state import LaunchAgent, QueueItem, Run, RunQueue, Schema, State

WANDB_CLIENT_CHECKED = "0.31.0"


@dataclass
class Recorded:
    """One request the stand-in received."""

    method: str
    path: str
    kind: str  # graphql | file_stream | upload | download | telemetry | other
    op: str | None = None  # GraphQL operation name, or the endpoint's kind
    variables: dict[str, Any] = field(default_factory=dict)
    body: Any = None  # the parsed JSON body of a file_stream request
    user: str | None = None  # whom the key belonged to (None: no or a bad key)
    status: int = 0
    at: float = field(default_factory=time.time)


class _Cut(Exception):
    """Drop the connection without an answer (the network cut)."""


def _new_key() -> str:
    # W&B's client checks the format: 40+ letters, digits or underscores.
    return "standin_" + secrets.token_hex(20)


class WandbStandIn:
    """The stand-in server. ``WandbStandIn().start()``; ``.url``, ``.api_key``, ``.env()``.

    ``users`` maps API keys to usernames (default: one fresh key for user ``"standin"``);
    ``members`` maps an entity to the usernames allowed to write to it (an entity not
    named is open to every user)."""

    def __init__(
        self,
        users: dict[str, str] | None = None,
        *,
        members: dict[str, set[str]] | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        if users is None:
            users = {_new_key(): "standin"}
        self.state = State(dict(users), members)
        self.api_key = next(iter(users))
        self.username = users[self.api_key]
        self.host = host
        self.port = port
        self.requests: list[Recorded] = []
        self.unknown: set[tuple[str, str]] = set()
        self.delay = 0.0
        self._fail: list[int] = []
        self._cut_remaining: int | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopper: threading.Thread | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------ life

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> WandbStandIn:
        """Serve (again) on the same port; state is kept across stop()/start()."""
        stopper = self._stopper
        if stopper is not None:  # a cut in progress ends first
            stopper.join()
        with self._lock:
            if self._httpd is not None:
                return self
            handler = type("Handler", (_Handler,), {"standin": self})
            httpd = ThreadingHTTPServer((self.host, self.port), handler)
            httpd.daemon_threads = True
            self.port = httpd.server_address[1]
            self.state.base_url = self.url
            self._httpd = httpd
            self._cut_remaining = None
            self._thread = threading.Thread(
                target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: the port refuses connections until start()."""
        with self._lock:
            httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()

    close = stop

    def __enter__(self) -> WandbStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ faults

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        """Answer the next ``n`` requests with ``status`` (and do nothing else)."""
        with self._lock:
            self._fail.extend([status] * n)

    def cut_after(self, n: int) -> None:
        """Answer ``n`` more requests, then stop (as if the network were cut): later
        requests find the connection dropped or refused until start()."""
        with self._lock:
            self._cut_remaining = n
        if n == 0:
            self._stop_in_background()

    # ------------------------------------------------------------ reading state

    def env(self, **extra: str) -> dict[str, str]:
        """WANDB_BASE_URL and WANDB_API_KEY for this stand-in (plus ``extra``)."""
        return {"WANDB_BASE_URL": self.url, "WANDB_API_KEY": self.api_key, **extra}

    def add_user(self, username: str, key: str | None = None) -> str:
        """Accept one more key, for ``username``; returns the key."""
        key = key or _new_key()
        with self.state.lock:
            self.state.users[key] = username
        return key

    def run(self, entity: str, project: str, name: str) -> Run | None:
        with self.state.lock:
            return self.state.run(entity, project, name)

    @property
    def runs(self) -> list[Run]:
        with self.state.lock:
            return list(self.state.runs.values())

    def add_queue(
        self, entity: str, project: str, name: str, *, access: str = "PROJECT"
    ) -> RunQueue:
        """Create a run queue (as W&B's UI would); returns it."""
        return self.state.add_queue(entity, project, name, created_by=self.username, access=access)

    def queue(self, entity: str, project: str, name: str) -> RunQueue | None:
        with self.state.lock:
            return self.state.queue(entity, project, name)

    def push(
        self, entity: str, project: str, queue: str, run_spec: dict[str, Any], **kw: Any
    ) -> QueueItem:
        """Push an item directly (no HTTP), as another W&B user would; ``priority``,
        ``template_variables`` optional."""
        with self.state.lock:
            q = self.state.queue(entity, project, queue) or self.add_queue(entity, project, queue)
            inp: dict[str, Any] = {"runSpec": json.dumps(run_spec), "priority": kw.get("priority")}
            if kw.get("template_variables") is not None:
                inp["templateVariableValues"] = json.dumps(kw["template_variables"])
            return self.state.push(self.username, q, inp)

    def item(self, item_id: str) -> QueueItem | None:
        with self.state.lock:
            return self.state.items.get(item_id)

    @property
    def agents(self) -> list[LaunchAgent]:
        with self.state.lock:
            return list(self.state.agents.values())

    def ops(self, kind: str | None = None) -> list[str]:
        """The names of the operations received, in order (``file_stream`` for that endpoint)."""
        return [r.op or r.kind for r in list(self.requests) if kind is None or r.kind == kind]

    def requests_for(self, op: str) -> list[Recorded]:
        return [r for r in list(self.requests) if r.op == op]

    # ------------------------------------------------------------ handling

    def _admit(self) -> int | None:
        """Before a request: None to go on, a status to answer with, or raise _Cut."""
        with self._lock:
            if self._httpd is None:
                raise _Cut()
            if self._cut_remaining is not None:
                if self._cut_remaining <= 0:
                    raise _Cut()
                self._cut_remaining -= 1
                if self._cut_remaining == 0:
                    self._stop_in_background()
            if self._fail:
                return self._fail.pop(0)
        return None

    def _stop_in_background(self) -> None:
        def stop_soon() -> None:
            time.sleep(0.02)  # let the last admitted answer go out
            self.stop()

        self._stopper = threading.Thread(target=stop_soon, daemon=True)
        self._stopper.start()

    def user_for(self, header: str | None) -> str | None:
        if not header or not header.startswith("Basic "):
            return None
        try:
            name, _, key = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        if name != "api":
            return None
        with self.state.lock:
            return self.state.users.get(key)

    def graphql(self, user: str, body: dict[str, Any], rec: Recorded) -> tuple[int, dict[str, Any]]:
        query = body.get("query")
        variables = body.get("variables") or {}
        rec.variables = variables if isinstance(variables, dict) else {}
        rec.op = body.get("operationName")
        if not isinstance(query, str):
            return 400, {"errors": [{"message": "Must provide query string."}]}

        def unknown(type_name: str, field_name: str) -> None:
            self.unknown.add((type_name, field_name))

        with self.state.lock:
            schema = Schema(self.state, user)
            try:
                op, data, errors = execute(
                    query,
                    rec.variables,
                    rec.op,
                    {"query": schema.query_root(), "mutation": schema.mutation_root()},
                    unknown,
                )
            except GraphQLError as exc:
                self.unknown.add(("operation", str(rec.op)))
                return 400, {"errors": [{"message": str(exc)}]}
        rec.op = rec.op or op.name
        answer: dict[str, Any] = {"data": data}
        if errors:
            answer["errors"] = errors
        return 200, answer

    def file_stream(self, user: str, path: list[str], body: Any, rec: Recorded) -> tuple[int, Any]:
        rec.op = "file_stream"
        rec.body = body
        if not isinstance(body, dict):
            return 400, {"error": "body: not a JSON object"}
        key = (unquote(path[1]), unquote(path[2]), unquote(path[3]))
        with self.state.lock:
            try:
                return 200, self.state.file_stream(user, key, body)
            except LookupError as exc:
                return 404, {"error": str(exc)}
            except GraphQLError as exc:
                return 403, {"error": str(exc)}
            except (ValueError, TypeError, AttributeError) as exc:
                return 400, {"error": str(exc)}


class _Handler(BaseHTTPRequestHandler):
    standin: WandbStandIn
    protocol_version = "HTTP/1.0"  # one request per connection: stop() cuts cleanly
    server_version = "wandb-standin"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0] or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                data += self.rfile.read(size)
                self.rfile.readline()
        else:
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if (self.headers.get("Content-Encoding") or "").lower() == "gzip":
            data = gzip.decompress(data)
        return data

    def _send(self, status: int, payload: Any, content_type: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        s = self.standin
        path = urlsplit(self.path).path
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["graphql"]:
            kind = "graphql"
        elif parts[:1] == ["files"] and len(parts) == 5 and parts[4] == "file_stream":
            kind = "file_stream"
        elif parts[:1] == ["storage"] and len(parts) == 2:
            kind = "upload" if self.command == "PUT" else "download"
        elif parts[:3] == ["sdk", "otel", "v1"]:
            # wandb-core's OpenTelemetry export (off with WANDB_ERROR_REPORTING=false)
            kind = "telemetry"
        else:
            kind = "other"
        rec = Recorded(self.command, self.path, kind, op=None if kind == "graphql" else kind)
        try:
            body = self._read_body()
        except (ValueError, OSError):
            body = b""
        if s.delay:
            time.sleep(s.delay)
        try:
            forced = s._admit()
        except _Cut:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        rec.user = s.user_for(self.headers.get("Authorization"))
        s.requests.append(rec)
        if kind == "graphql":
            with contextlib.suppress(ValueError, AttributeError):  # named even when it fails
                rec.op = json.loads(body or b"{}").get("operationName")
        if forced is not None:
            rec.status = forced
            self._send(forced, {"errors": [{"message": f"stand-in: injected HTTP {forced}"}]})
            return
        status: int
        answer: Any
        if kind in ("graphql", "file_stream") and rec.user is None:
            status, answer = 401, {"errors": [{"message": "user is not logged in"}]}
        elif kind == "graphql" and self.command == "POST":
            try:
                parsed = json.loads(body or b"{}")
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                status, answer = 400, {"errors": [{"message": "body: not a JSON object"}]}
            else:
                status, answer = s.graphql(rec.user or "", parsed, rec)
        elif kind == "file_stream" and self.command == "POST":
            try:
                parsed = json.loads(body or b"null")
            except ValueError:
                parsed = None
            status, answer = s.file_stream(rec.user or "", parts, parsed, rec)
        elif kind == "upload":
            with s.state.lock:
                ok = s.state.store_upload(parts[1], body)
            status, answer = (200, b"") if ok else (403, {"error": "unknown upload URL"})
        elif kind == "telemetry":
            status, answer = 200, {}
        elif kind == "download":
            with s.state.lock:
                data = s.state.download(parts[1])
            status, answer = (200, data) if data is not None else (404, {"error": "not found"})
        else:
            s.unknown.add(("path", f"{self.command} {path}"))
            status, answer = 404, {"error": f"the stand-in has no {self.command} {path}"}
        rec.status = status
        if isinstance(answer, bytes):
            self._send(status, answer, "application/octet-stream")
        else:
            self._send(status, answer)
