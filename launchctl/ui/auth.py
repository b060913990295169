"""Who may use the web view: the holder of the token printed at start, nobody else.

Every route but ``/healthz`` needs the token, reads included: the server acts as the user
who started it, and every other user of the machine can reach loopback. The token comes
as a cookie (``launchctl_ui_PORT``, set by opening the printed URL, ``/?token=T``) or an
``Authorization: Bearer`` header. A change (any method but GET and HEAD) also needs the
token again, as the form field ``_csrf`` or the header ``X-Launchctl-Token``: a cookie
alone, which a browser sends with a request another site made, changes nothing. Tokens
are compared in constant time.

The ``Host`` header must name the address the server listens on (or ``localhost`` for a
loopback one), so a page whose DNS name was rebound to 127.0.0.1 gets nothing either.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

COOKIE = "launchctl_ui"  # + "_PORT": two servers (ui, agent --ui) in one browser keep theirs
CSRF_FIELD = "_csrf"
CSRF_HEADER = "x-launchctl-token"
TOKEN_ENV = "LAUNCHCTL_UI_TOKEN"
SAFE_METHODS = frozenset({"GET", "HEAD"})
OPEN_PATHS = frozenset({"/healthz"})  # reveals nothing: "ok"

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

# Sent with every answer: no framing, no inline script, no referrer (a URL may hold the token).
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        b" frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]

UNAUTHORIZED_PAGE = (
    "<!doctype html><meta charset=utf-8><title>launchctl ui: token needed</title>"
    "<h1>Token needed</h1><p>Open the URL <code>launchctl ui</code> printed when it started"
    " (it ends in <code>?token=...</code>); it sets a cookie for this browser.</p>"
)


def new_token() -> str:
    """A fresh url-safe token of 32 random bytes, or ``$LAUNCHCTL_UI_TOKEN`` when set."""
    given = os.environ.get(TOKEN_ENV)
    if given:
        if len(given) < 16 or not given.isascii() or not given.isprintable() or " " in given:
            from launchctl.errors import UsageError

            raise UsageError(f"{TOKEN_ENV} must be at least 16 printable ASCII characters")
        return given
    return secrets.token_urlsafe(32)


def same(given: str | None, token: str) -> bool:
    """Whether ``given`` is the token, compared in constant time."""
    if not given:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in scope.get("headers") or []:
        name = key.decode("latin-1").lower()
        text = value.decode("latin-1")
        out[name] = f"{out[name]}; {text}" if name == "cookie" and name in out else text
    return out


def cookie_name(scope: Scope) -> str:
    """This server's cookie: cookies are kept per host, not per port, so each port has
    its own name (else opening a second server's URL would log the browser out of the
    first)."""
    server = scope.get("server") or (None, None)
    return f"{COOKIE}_{server[1]}" if server[1] else COOKIE


def cookie_token(headers: dict[str, str], name: str = COOKIE) -> str | None:
    raw = headers.get("cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except Exception:  # a malformed Cookie header authenticates nobody
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


def bearer_token(headers: dict[str, str]) -> str | None:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def host_allowed(host_header: str | None, allowed: frozenset[str] | None) -> bool:
    """Whether the request's Host names this server (``allowed``: host names, no port;
    None: any host, for a server started with --allow-remote)."""
    if allowed is None:
        return True
    if not host_header:
        return False
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:8765
        name = host[1 : host.find("]")] if "]" in host else host
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name in allowed


class TokenAuth:
    """ASGI middleware: the token check in front of every route (see the module's text)."""

    def __init__(self, app: ASGIApp, token: str, allowed_hosts: frozenset[str] | None) -> None:
        self.app = app
        self.token = token
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)

        async def send_secured(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        if not host_allowed(headers.get("host"), self.allowed_hosts):
            await _drain(receive)
            await _plain(send_secured, 421, "this server answers only its own address\n")
            return
        path = scope.get("path", "")
        if path in OPEN_PATHS:
            await self.app(scope, receive, send_secured)
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if path == "/" and "token" in query and scope["method"] in SAFE_METHODS:
            if not same(query["token"][0], self.token):
                await _drain(receive)
                await _page(send_secured, 401, UNAUTHORIZED_PAGE)
                return
            cookie = f"{cookie_name(scope)}={self.token}; HttpOnly; SameSite=Strict; Path=/"
            await send_secured(
                {
                    "type": "http.response.start",
                    "status": 303,
                    "headers": [(b"location", b"/"), (b"set-cookie", cookie.encode("latin-1"))],
                }
            )
            await send_secured({"type": "http.response.body", "body": b""})
            return
        mine = cookie_token(headers, cookie_name(scope))
        if not (same(mine, self.token) or same(bearer_token(headers), self.token)):
            await _drain(receive)
            await _page(send_secured, 401, UNAUTHORIZED_PAGE)
            return
        scope.setdefault("state", {})["csrf_header_ok"] = same(headers.get(CSRF_HEADER), self.token)
        await self.app(scope, receive, send_secured)


async def csrf_ok(request: Any, token: str) -> bool:
    """Whether a change request carries the token again: header or form field ``_csrf``."""
    if request.scope.get("state", {}).get("csrf_header_ok"):
        return True
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        return False
    form = await request.form()
    value = form.get(CSRF_FIELD)
    return same(value if isinstance(value, str) else None, token)


# The most of a refused request's body read before answering it (``_drain``).
DRAIN_LIMIT = 1 << 20


async def _drain(receive: Any) -> None:
    """Read, and drop, a refused request's body before answering it. A server that answers
    and closes with a POST's body unread has the kernel reset the connection, and the
    client may lose the answer (a form sent without the token then reads "connection
    reset", not 401). Bounded: past ``DRAIN_LIMIT`` the rest is left unread."""
    seen = 0
    while seen <= DRAIN_LIMIT:
        message = await receive()
        if message.get("type") != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _answer(send: Any, status: int, text: str, content_type: bytes) -> None:
    body = text.encode("utf-8")
    headers = [
        (b"content-type", content_type + b"; charset=utf-8"),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _plain(send: Any, status: int, text: str) -> None:
    await _answer(send, status, text, b"text/plain")


async def _page(send: Any, status: int, html: str) -> None:
    await _answer(send, status, html, b"text/html")
