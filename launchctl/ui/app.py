"""The web view's Starlette app: its routes, the token check in front of them, the store.

Pages are read and changes made through the same core functions the CLI calls
(``launchctl.runs``, ``launch``, ``queues``, ``overview``, ``sweeps``), as the user who
started the server, so what the CLI refuses the page refuses with the same message.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from launchctl.ui import auth, events, pages
from launchctl.ui.context import Context

HERE = Path(__file__).resolve().parent


Handler = Callable[[Request], Awaitable[Response]]


def _change(ctx: Context, handler: Callable[[Context, Request], Awaitable[Response]]) -> Handler:
    """A POST route: refused with 403, before anything runs, without the token again."""

    async def endpoint(request: Request) -> Response:
        if not await auth.csrf_ok(request, ctx.token):
            return PlainTextResponse(
                "refused: a change needs the page's token (form field _csrf or header"
                " X-Launchctl-Token)\n",
                status_code=403,
            )
        return await handler(ctx, request)

    return endpoint


def _read(ctx: Context, handler: Callable[[Context, Request], Awaitable[Response]]) -> Handler:
    async def endpoint(request: Request) -> Response:
        return await handler(ctx, request)

    return endpoint


def create_app(
    token: str, *, root: Path | None = None, allowed_hosts: frozenset[str] | None = None
) -> Any:
    """The ASGI app: routes behind ``auth.TokenAuth`` (``allowed_hosts``: the names the
    Host header may give, None for any)."""
    ctx = Context(token, root)
    ctx.feed = events.ChangeFeed(ctx)

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok")

    routes = [
        Route("/healthz", healthz),
        Route("/", _read(ctx, pages.overview)),
        Route("/runs", _read(ctx, pages.runs_page)),
        Route("/runs/{run_id}", _read(ctx, pages.run_page)),
        Route("/runs/{run_id}/cancel", _change(ctx, pages.cancel), methods=["POST"]),
        Route("/runs/{run_id}/rerun", _change(ctx, pages.rerun), methods=["POST"]),
        Route("/runs/{run_id}/hold", _change(ctx, pages.hold), methods=["POST"]),
        Route("/runs/{run_id}/release", _change(ctx, pages.release), methods=["POST"]),
        Route("/runs/{run_id}/log/events", _read(ctx, events.log_events)),
        Route("/queues/{name}", _read(ctx, pages.queue_page)),
        Route("/queues/{name}/launch", _change(ctx, pages.launch), methods=["POST"]),
        Route("/queues/{name}/template", _change(ctx, pages.template_edit), methods=["POST"]),
        Route("/sweeps", _read(ctx, pages.sweeps_page)),
        Route("/sweeps/{sweep_id}", _read(ctx, pages.sweep_page)),
        Route("/events", _read(ctx, events.run_events)),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        ctx.feed.stop()

    app = Starlette(routes=routes, lifespan=lifespan)
    return auth.TokenAuth(app, token, allowed_hosts)
