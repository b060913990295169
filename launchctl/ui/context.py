"""What every page handler shares: the token, one store per thread, rendering a page
with Jinja2 (autoescaped), a refusal as the CLI words it, and masking secrets."""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.responses import HTMLResponse

from launchctl.errors import LaunchctlError, NotFound
from launchctl.service import open_store
from launchctl.store import Store

HERE = Path(__file__).resolve().parent


class Context:
    """What every handler shares: the token, the store's folder, one store per thread."""

    def __init__(self, token: str, root: Path | None) -> None:
        self.token = token
        self.root = root
        self._local = threading.local()
        self.feed: Any = None  # the app sets its events.ChangeFeed

    def store(self) -> Store:
        """This thread's handle on the store (a SQLite connection belongs to one thread)."""
        store = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = open_store(self.root)
        return store


@functools.cache
def _env() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=True,  # every value is text: a run named <script> shows as text
    )
    env.filters["when"] = _when
    env.filters["dur"] = _duration
    env.filters["urlq"] = lambda v: quote(str(v), safe="")
    return env


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def render(ctx: Context, name: str, status: int = 200, **values: Any) -> HTMLResponse:
    from launchctl import identity

    html = _env().get_template(name).render(csrf=ctx.token, user=identity.current_user(), **values)
    return HTMLResponse(html, status_code=status)


def status_of(exc: LaunchctlError) -> int:
    from launchctl import teams
    from launchctl.sweeps import manage

    if isinstance(exc, teams.PermissionDenied | manage.PermissionDenied):
        return 403
    if isinstance(exc, NotFound):
        return 404
    return 400


def error_response(ctx: Context, exc: LaunchctlError) -> HTMLResponse:
    return render(ctx, "error.html", status_of(exc), title="refused", message=str(exc))


def masker() -> Any:
    """A masker over the secrets of the user who runs the server, when they can be read:
    what a page shows is masked as a run's log is (a value that slipped into a spec)."""
    from launchctl.masking import Masker
    from launchctl.secrets import SecretStore

    try:
        store = SecretStore()
        values = list(store.get_many(store.names()).values())
    except (LaunchctlError, OSError):
        values = []
    return Masker(values)
