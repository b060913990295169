"""The HTTP client that speaks to a W&B-compatible server, as W&B's own client does.

Stdlib only (``http.client``), imported when a request is first made, so the CLI starts
fast. What it sends was read from W&B's client (0.31.0, and the Go core it runs):

- GraphQL: ``POST {base_url}/graphql`` with JSON ``{"query", "variables",
  "operationName"}`` (core/internal/api/gql_client.go ``NewGQLClient``: the endpoint,
  genqlient's request body, the ``X-WANDB-USERNAME`` header when a user name is set).
- The run's stream: ``POST {base_url}/files/{entity}/{project}/{run}/file_stream``
  (core/internal/filestream/filestream.go ``fileStream.Start``).
- Uploads: ``PUT`` to the URL that ``CreateRunFiles`` returned.
- Auth: HTTP basic ``api:KEY`` (core/internal/api/credentials.go
  ``apiKeyCredentialProvider.apply``), sent only to the base URL, never to an upload
  URL elsewhere (core/internal/api ``httplayers.LimitTo``). Redirects are not followed,
  so the key never travels to a host it was not meant for.
- Retries: network errors, timeouts, 429 and 5xx back off exponentially with a 25%
  jitter, and a ``Retry-After`` header is honoured (core/internal/clients/backoff.go
  ``ExponentialBackoffWithJitter``); any other 4xx is final. W&B retries 20 times from
  2 s; launchctl's defaults are smaller (3 retries from 0.5 s) because an offline
  server is the normal case here and the outbox keeps the work.

The API key is never put in an exception, a repr or a log line: whatever a server
answers is scrubbed of it before it is shown, escaped and cut to one line.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from launchctl import __version__
from launchctl.errors import LaunchctlError

if TYPE_CHECKING:
    import http.client

DEFAULT_TIMEOUT = 10.0
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF = 0.5
MAX_WAIT = 60.0  # the longest pause between two tries, Retry-After included (W&B: 60 s)
MAX_MESSAGE = 300  # characters of a server's message shown in an error
USER_AGENT = f"launchctl/{__version__} (W&B Launch compatible)"

NO_KEY_HELP = (
    "no W&B API key: set WANDB_API_KEY, or store the key as a launchctl secret and name it"
    " with `launchctl sync config --key-secret NAME`, or run `wandb login --host URL`"
    " (it writes ~/.netrc)"
)


class SyncError(LaunchctlError):
    """Talking to a W&B server failed; the message names the server, never the key."""


class Unreachable(SyncError):
    """The server is offline: connection refused or reset, DNS, a timeout, or 429/5xx
    after every retry. Not an error for ``launchctl sync``: the work waits in the outbox."""


class Refused(SyncError):
    """The server said no: a 4xx (401/403: the key), or GraphQL ``errors``. Never retried."""


@dataclass(frozen=True)
class Credentials:
    """Where to sync and with which key, and where each came from (words for the user).

    ``repr`` and ``str`` show whether a key is set and its source, never the key.
    """

    base_url: str
    api_key: str | None
    url_source: str
    key_source: str | None

    def __repr__(self) -> str:
        return (
            f"Credentials(base_url={self.base_url!r}, url_source={self.url_source!r},"
            f" key={self.key_shown()!r})"
        )

    __str__ = __repr__

    def key_shown(self) -> str:
        """``set (from SOURCE)`` or ``not set``: how a key is described to a user."""
        return f"set (from {self.key_source})" if self.api_key else "not set"


def _env_number(name: str, default: float, kind: type = float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise LaunchctlError(f"{name} must be a number (got {raw[:40]!r})") from None
    if value < 0:
        raise LaunchctlError(f"{name} cannot be negative (got {raw[:40]!r})")
    return float(value)


_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028-\u202e\u2066-\u2069]")


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """A server's text made safe for one line of a terminal: controls as ``\\xNN``, cut."""
    text = _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}", text.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def operation_name(query: str) -> str | None:
    """The name of the first operation in a GraphQL document (``mutation UpsertBucket``)."""
    match = re.search(r"\b(?:query|mutation|subscription)\s+([_A-Za-z][_0-9A-Za-z]*)", query)
    return match.group(1) if match else None


@dataclass
class _Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class WandbServer:
    """One W&B-compatible server, reached with one set of credentials.

    ``timeout`` (seconds per connect or read), ``retries`` (tries after the first) and
    ``backoff`` (the first pause, doubled each retry) default to 10, 3 and 0.5, which
    ``LAUNCHCTL_SYNC_TIMEOUT``, ``LAUNCHCTL_SYNC_RETRIES`` and ``LAUNCHCTL_SYNC_BACKOFF``
    override. ``requests_sent`` and ``bytes_sent`` count every try, for progress.
    Safe to share between threads (one request at a time).
    """

    def __init__(
        self,
        creds: Credentials,
        *,
        timeout: float | None = None,
        retries: int | None = None,
        backoff: float | None = None,
    ) -> None:
        self.creds = creds
        self.base_url = creds.base_url.rstrip("/")
        self.timeout = (
            timeout
            if timeout is not None
            else _env_number("LAUNCHCTL_SYNC_TIMEOUT", DEFAULT_TIMEOUT)
        )
        self.retries = int(
            retries
            if retries is not None
            else _env_number("LAUNCHCTL_SYNC_RETRIES", DEFAULT_RETRIES, int)
        )
        self.backoff = (
            backoff
            if backoff is not None
            else _env_number("LAUNCHCTL_SYNC_BACKOFF", DEFAULT_BACKOFF)
        )
        self.requests_sent = 0
        self.bytes_sent = 0
        self._lock = threading.Lock()
        self._conns: dict[tuple[str, str], http.client.HTTPConnection] = {}
        base = urlsplit(self.base_url)
        self._origin = (base.scheme, base.netloc)

    def __repr__(self) -> str:
        return f"WandbServer({self.base_url!r}, key={self.creds.key_shown()!r})"

    # -- the operations -------------------------------------------------------

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run one GraphQL operation and return its ``data``; ``errors`` -> ``Refused``."""
        name = operation_name(query)
        body: dict[str, Any] = {"query": query, "variables": variables or {}}
        if name:
            body["operationName"] = name
        what = name or "a GraphQL request"
        answer = self._send("POST", f"{self.base_url}/graphql", _json_bytes(body), what=what)
        reply = self._json(answer, what)
        if not isinstance(reply, dict):
            raise Refused(f"the server at {self.base_url} answered {what} with no GraphQL reply")
        errors = reply.get("errors")
        if errors:
            raise Refused(f"the server at {self.base_url} refused {what}: {self._message(errors)}")
        data = reply.get("data")
        if not isinstance(data, dict):
            raise Refused(f"the server at {self.base_url} answered {what} with no data")
        return data

    def file_stream(
        self, entity: str, project: str, run_name: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        """Post one ``file_stream`` request for a run; the server's JSON answer."""
        path = "/".join(quote(part, safe="") for part in (entity, project, run_name))
        url = f"{self.base_url}/files/{path}/file_stream"
        what = f"the file stream of run {entity}/{project}/{run_name}"
        answer = self._send("POST", url, _json_bytes(payload), what=what)
        if not answer.body.strip():
            return {}
        reply = self._json(answer, what)
        return reply if isinstance(reply, dict) else {}

    def upload(self, url: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        """PUT ``data`` to an upload URL the server gave (``CreateRunFiles``'s uploadUrl)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise Refused(
                f"the server at {self.base_url} gave an upload URL that is not http(s):"
                f" {one_line(url, 120)}"
            )
        self._send("PUT", url, data, what="an upload", extra=headers or {})

    def viewer(self) -> dict[str, Any]:
        """Who the key belongs to: ``{"id", "entity", "username"}`` (W&B's ``Viewer`` query)."""
        data = self.graphql(VIEWER_QUERY, {})
        viewer = data.get("viewer")
        if not isinstance(viewer, dict):
            raise Refused(
                f"the server at {self.base_url} does not know the API key from"
                f" {self.creds.key_source}"
            )
        return viewer

    def close(self) -> None:
        with self._lock:
            for conn in self._conns.values():
                conn.close()
            self._conns.clear()

    # -- the transport ----------------------------------------------------------

    def _auth_for(self, url: str) -> dict[str, str]:
        """The Authorization header, only for URLs under the base URL."""
        parts = urlsplit(url)
        if (parts.scheme, parts.netloc) != self._origin or not url.startswith(self.base_url):
            return {}
        key = self.creds.api_key
        if not key:
            raise Refused(NO_KEY_HELP)
        if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
            raise Refused(
                f"the API key from {self.creds.key_source} holds characters no API key has"
                " (a space, a line break, a control or non-ASCII character)"
            )
        token = base64.b64encode(f"api:{key}".encode()).decode("ascii")
        return {"Authorization": f"Basic {token}"}

    def _send(
        self, method: str, url: str, body: bytes, *, what: str, extra: dict[str, str] | None = None
    ) -> _Answer:
        """Send with retries; a 2xx answer, or ``Unreachable``/``Refused``."""
        for name, value in (extra or {}).items():
            if not _header_ok(name) or not _header_ok(value, value=True):
                raise Refused(
                    f"the server at {self.base_url} asked for a header that cannot be sent with"
                    f" {what}: {one_line(str(name), 60)}"
                )
        headers = {
            "User-Agent": USER_AGENT,
            "Content-Length": str(len(body)),
            **(extra or {}),
        }
        if method == "POST":
            headers.setdefault("Content-Type", "application/json")
            headers.setdefault("Accept", "application/json")
            user = os.environ.get("WANDB_USERNAME")  # W&B's service-account header
            if user and _header_ok(user, value=True):
                headers["X-WANDB-USERNAME"] = user
        headers.update(self._auth_for(url))
        tries = self.retries + 1
        last = ""
        for attempt in range(tries):
            wait: float | None = None
            try:
                answer = self._once(method, url, body, headers)
            except (OSError, _http_errors()) as exc:
                if _is_certificate_error(exc):  # retrying cannot fix it; not "offline"
                    raise Refused(
                        f"the server at {self.base_url} failed TLS certificate verification:"
                        f" {one_line(getattr(exc, 'verify_message', '') or str(exc), 160)}"
                    ) from None
                last = _network_reason(exc)
            else:
                if 200 <= answer.status < 300:
                    return answer
                if answer.status == 429 or answer.status >= 500:
                    last = f"HTTP {answer.status}{self._detail(answer)}"
                    wait = _retry_after(answer.headers.get("retry-after"))
                else:
                    raise self._refusal(answer, what)
            if attempt + 1 < tries:
                if wait is None:
                    wait = self.backoff * (2**attempt) * (1 + 0.25 * random.random())
                time.sleep(min(MAX_WAIT, wait))
        where = urlsplit(url)
        server = self.base_url if url.startswith(self.base_url) else where.netloc
        plural = "try" if tries == 1 else "tries"
        raise Unreachable(f"the server at {server} is offline ({last}; {tries} {plural})")

    def _once(self, method: str, url: str, body: bytes, headers: dict[str, str]) -> _Answer:
        import http.client
        import socket

        parts = urlsplit(url)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        key = (parts.scheme, parts.netloc)
        with self._lock:
            for fresh in (False, True):
                conn = self._conns.get(key)
                reused = conn is not None and not fresh
                if conn is None or fresh:
                    if conn is not None:
                        conn.close()
                    conn = self._connect(parts.scheme, parts.netloc)
                    self._conns[key] = conn
                self.requests_sent += 1
                self.bytes_sent += len(body)
                try:
                    if conn.sock is None:
                        conn.connect()
                        # http.client writes headers and body apart; with Nagle's algorithm
                        # a peer's delayed ACK can hold the body back ~40 ms on a kept-alive
                        # connection. Go's net/http (W&B's core) sets this too.
                        sock: socket.socket | None = conn.sock
                        if sock is not None:
                            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conn.request(method, target, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                    conn.close()
                    del self._conns[key]
                    if reused:  # a kept-alive connection the server had closed: once more
                        continue
                    raise
                except BaseException:
                    conn.close()
                    self._conns.pop(key, None)
                    raise
                answer = _Answer(
                    response.status, {k.lower(): v for k, v in response.getheaders()}, data
                )
                if response.will_close:
                    conn.close()
                    self._conns.pop(key, None)
                return answer
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        import http.client

        if scheme == "https":
            import ssl

            return http.client.HTTPSConnection(
                netloc, timeout=self.timeout, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(netloc, timeout=self.timeout)

    # -- reading answers ----------------------------------------------------------

    def _json(self, answer: _Answer, what: str) -> Any:
        try:
            return json.loads(answer.body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise Refused(
                f"the server at {self.base_url} answered {what} with something that is not"
                f" JSON (HTTP {answer.status}): is {self.base_url} a W&B server?"
            ) from None

    def _scrub(self, text: str) -> str:
        """``text`` without the key (a server may echo what it got) nor its basic-auth form."""
        key = self.creds.api_key
        if key:
            token = base64.b64encode(f"api:{key}".encode()).decode("ascii")
            text = text.replace(key, "***").replace(token, "***")
        return text

    def _message(self, errors: Any) -> str:
        """The first message of a GraphQL ``errors`` list (or an ``error`` field)."""
        first = errors[0] if isinstance(errors, list) and errors else errors
        if isinstance(first, dict):
            first = first.get("message", first)
        text = first if isinstance(first, str) else json.dumps(first, default=str)
        return one_line(self._scrub(text)) or "no message"

    def _detail(self, answer: _Answer) -> str:
        """``: MESSAGE`` from an error answer's body, or nothing."""
        try:
            reply = json.loads(answer.body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            text = answer.body.decode("utf-8", "replace")
        else:
            if isinstance(reply, dict) and (reply.get("errors") or reply.get("error")):
                text = self._message(reply.get("errors") or reply.get("error"))
            else:
                text = json.dumps(reply, default=str)
        text = one_line(self._scrub(text), 200)
        return f": {text}" if text else ""

    def _refusal(self, answer: _Answer, what: str) -> Refused:
        status = answer.status
        if status in (401, 403):
            return Refused(
                f"the server at {self.base_url} refused the API key from"
                f" {self.creds.key_source or 'nowhere'} (HTTP {status}){self._detail(answer)}"
            )
        if 300 <= status < 400:
            where = one_line(self._scrub(answer.headers.get("location", "")), 120)
            return Refused(
                f"the server at {self.base_url} redirects {what} (HTTP {status}"
                f"{' to ' + where if where else ''}): set the base URL to where it points"
            )
        return Refused(
            f"the server at {self.base_url} refused {what} (HTTP {status}){self._detail(answer)}"
        )


# W&B's own Viewer query (wandb/apis/internal's ``Api.viewer``), trimmed to what sync needs.
VIEWER_QUERY = """
query Viewer {
    viewer {
        id
        entity
        username
    }
}
"""


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str).encode("utf-8")


def _http_errors() -> type[Exception]:
    import http.client

    return http.client.HTTPException


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _header_ok(text: str, *, value: bool = False) -> bool:
    """A header name (an HTTP token) or value (printable Latin-1, no line break)."""
    if not isinstance(text, str):
        return False
    if not value:
        return _TOKEN.fullmatch(text) is not None
    return all(" " <= c <= "~" or "\xa0" <= c <= "\xff" or c == "\t" for c in text)


def _is_certificate_error(exc: BaseException) -> bool:
    import ssl

    return isinstance(exc, ssl.SSLCertVerificationError)


def _network_reason(exc: BaseException) -> str:
    """A short, key-free description of a network failure."""
    import socket

    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return "its host name does not resolve"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, OSError):
        return one_line(exc.strerror or type(exc).__name__, 120)
    return one_line(type(exc).__name__, 120)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
