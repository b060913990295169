"""Starting the web view: which address it may listen on, the socket, uvicorn, the URL.

Loopback by default. Any other address is refused unless ``allow_remote`` is given, and
then a warning says that every machine that reaches it can try the token (the token is
still needed for everything). The URL with the token is printed once the socket listens,
as the first line on stdout, so a script or a test can read it and connect at once.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from launchctl.errors import LaunchctlError, UsageError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
EXTRA_HINT = "the web view needs its extra: pip install 'launchctl[ui]'"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def require_extra() -> None:
    """Refuse in one line when the ``ui`` extra is not installed."""
    try:
        import multipart  # noqa: F401  (python-multipart: Starlette's form parser)
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise LaunchctlError(EXTRA_HINT) from None


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host: str, allow_remote: bool, warn: Callable[[str], None]) -> None:
    """Refuse a non-loopback address without ``allow_remote``; warn with it."""
    if is_loopback(host):
        return
    if not allow_remote:
        raise UsageError(
            f"--host {host} is not a loopback address: the page acts as you, so anyone who"
            " reaches it could try; add --allow-remote if you mean it"
        )
    warn(
        f"warning: serving on {host}: every machine that reaches it can try the token;"
        " prefer 127.0.0.1 and an SSH tunnel"
    )


def check_port(port: int) -> int:
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be 0 (any free port) to 65535, got {port}")
    return port


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one), or a one-line refusal."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on {host}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, host: str, token: str) -> str:
    port = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if ":" in host.strip("[]") else host
    return f"http://{shown}:{port}/?token={token}"


def allowed_hosts(host: str, allow_remote: bool) -> frozenset[str] | None:
    """The names a request's Host header may give: this address (and localhost for a
    loopback one); None (any) for a server started with --allow-remote."""
    if allow_remote:
        return None
    name = host.strip("[]").lower()
    return frozenset({name, *LOOPBACK_NAMES}) if is_loopback(host) else frozenset({name})


class Server:
    """A bound, not yet serving, web view: ``url``, ``serve()`` (blocks) or ``start()``
    (a daemon thread, as ``agent --ui`` uses it) and ``stop()``."""

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        allow_remote: bool = False,
        root: Path | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        require_extra()
        from launchctl.ui import auth

        say = warn or (lambda text: print(text, file=sys.stderr, flush=True))
        check_host(host, allow_remote, say)
        check_port(port)
        self.token = auth.new_token()
        self.sock = bind(host, port)
        self.url = url_of(self.sock, host, self.token)
        from launchctl.ui.app import create_app

        self.app = create_app(
            self.token, root=root, allowed_hosts=allowed_hosts(host, allow_remote)
        )
        import uvicorn

        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=1,
            server_header=False,
        )
        self._server: Any = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def serve(self) -> None:
        self._server.run(sockets=[self.sock])

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve, name="launchctl-ui", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)


def open_browser(url: str) -> None:
    import webbrowser

    with contextlib.suppress(Exception):  # no browser here: the URL is printed anyway
        webbrowser.open(url)
