"""Server-sent events: every run change (``/events``) and a run's log (``/runs/ID/log/events``).

One feed thread per server reads the store's event rows newer than the last it saw, a
few times a second (one indexed range read; nothing when nothing changed), and hands
each changed run, as the runs table shows it, to every open ``/events`` stream. The
browser never reloads: ``static/ui.js`` updates the rows in place.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from launchctl.errors import LaunchctlError
from launchctl.states import TERMINAL

if TYPE_CHECKING:
    from launchctl.ui.context import Context

POLL_S = 0.2  # how often the feed asks the store for new events
KEEPALIVE_S = 15.0  # a comment line so proxies and browsers keep a quiet stream open
LOG_CHUNK = 65536
SSE_HEADERS = {"cache-control": "no-store", "x-accel-buffering": "no"}


def sse(event: str, data: str) -> bytes:
    """One event; ``data`` is one line (JSON, or a log line with no CR/LF in it)."""
    return f"event: {event}\ndata: {data}\n\n".encode()


def run_payload(run: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """A run as the runs table and the overview show it (``run`` events carry this)."""
    from launchctl import runs

    now = time.time() if now is None else now
    started, ended = run.get("started_at"), run.get("ended_at")
    duration = None
    if started is not None:
        duration = round((ended if ended is not None else now) - started, 1)
    return {
        "id": run["id"],
        "name": run["name"],
        "state": run["state"],
        "queue": run.get("queue_name"),
        "project": run.get("project"),
        "exit_code": run.get("exit_code"),
        "duration": duration,
        "started_at": started,
        "ended_at": ended,
        "gpus": run.get("devices") or [],
        "reason": run.get("reason"),
        "config": {k: runs.config_value(run, k) for k in runs.run_config(run)},
        "state_cell": _state_cell(run),
    }


def _state_cell(run: dict[str, Any]) -> str:
    """The state as ``runs list`` shows it (``queued (held)``...), once ``annotate`` gave
    the run its ``held``/``after``/``limited``; the plain state before that."""
    if "limited" not in run:
        return str(run["state"])
    from launchctl.workflow import state_cell

    return state_cell(run)


def changed_runs(store: Any, after: int, limit: int = 1000) -> tuple[int, list[dict[str, Any]]]:
    """The runs with an event newer than ``after``, as payloads, and the newest event id."""
    from launchctl import runs

    fresh = store.runs.events_after(after, limit)
    if not fresh:
        return after, []
    now = time.time()
    rows = []
    for run_id in dict.fromkeys(e["run_id"] for e in fresh):
        try:
            rows.append(runs.get(store, run_id))
        except LaunchctlError:  # deleted meanwhile
            continue
    from launchctl.workflow import annotate

    annotate(store, rows)  # issue 18: each run's state cell, as the runs page shows it
    return int(fresh[-1]["id"]), [run_payload(r, now) for r in rows]


class ChangeFeed:
    """The one poller of a server; ``subscribe`` gives an asyncio queue of payloads."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._subs: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[dict[str, Any]]]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=10000)
        with self._lock:
            self._subs.append((asyncio.get_running_loop(), queue))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ui-feed", daemon=True)
                self._thread.start()
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        with self._lock:
            self._subs = [(lp, q) for lp, q in self._subs if q is not queue]

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        import sys

        store = self.ctx.store()
        last = store.runs.last_event_id()
        failing = False
        while not self._stop.wait(POLL_S):
            try:
                last, payloads = changed_runs(store, last)
                failing = False
            except Exception as exc:  # the feed outlives a bad moment (a busy or moved store)
                if not failing:
                    print(f"launchctl ui: cannot read changes: {exc}", file=sys.stderr)
                failing = True
                continue
            for payload in payloads:
                self._publish(payload)

    def _publish(self, payload: dict[str, Any]) -> None:
        with self._lock:
            subs = list(self._subs)
        for loop, queue in subs:
            try:
                loop.call_soon_threadsafe(_offer, queue, payload)
            except RuntimeError:  # that stream's loop is gone
                self.unsubscribe(queue)


def _offer(queue: asyncio.Queue[dict[str, Any]], payload: dict[str, Any]) -> None:
    if not queue.full():  # a stream too slow to read 10,000 changes loses the oldest news
        queue.put_nowait(payload)


async def run_events(ctx: Context, request: Request) -> Response:
    """``GET /events[?after=EVENT_ID]``: a ``run`` event, with the run as JSON, on every
    change; with ``after`` (the page's ``data-after``), first each run changed since, so
    nothing between the page's making and the stream's opening is lost."""
    from starlette.concurrency import run_in_threadpool

    queue = ctx.feed.subscribe()
    try:
        after = int(request.query_params.get("after", ""))
    except ValueError:
        after = None

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b"retry: 1000\n" + sse("open", "{}")  # the client knows it is listening
            if after is not None:
                _, missed = await run_in_threadpool(changed_runs, ctx.store(), after)
                for payload in missed:
                    yield sse("run", json.dumps(payload, separators=(",", ":")))
            while True:
                try:
                    payload = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                yield sse("run", json.dumps(payload, separators=(",", ":")))
        finally:
            ctx.feed.unsubscribe(queue)

    return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)


def _read_log(path: Path, offset: int) -> tuple[bytes, int]:
    from launchctl.runners.logfile import read_log

    try:
        with read_log(path) as fh:  # never a FIFO the run put in its place
            fh.seek(offset)
            data = fh.read(LOG_CHUNK)
    except OSError:
        return b"", offset
    return data, offset + len(data)


def log_line(raw: bytes, masker: Any) -> str:
    """One log line as the page shows it: masked, and only what a terminal would leave
    after a carriage return (progress bars), with no CR or LF left to break the stream."""
    text = masker.mask_text(raw.decode("utf-8", "replace"))
    return text.rstrip("\r").rsplit("\r", 1)[-1].replace("\n", " ")


async def log_events(ctx: Context, request: Request) -> Response:
    """``GET /runs/ID/log/events?offset=N``: ``line`` per new log line from byte ``N``,
    ``state`` (JSON) when the run's state changes; ends once the run has ended."""
    from starlette.concurrency import run_in_threadpool

    from launchctl import runs
    from launchctl.follow import log_path
    from launchctl.ui.context import error_response, masker

    run_id = request.path_params["run_id"]
    try:
        run = await run_in_threadpool(lambda: runs.get(ctx.store(), run_id))
    except LaunchctlError as exc:
        return error_response(ctx, exc)
    try:
        offset = max(0, int(request.query_params.get("offset", "0")))
    except ValueError:
        offset = 0
    path = log_path(ctx.store(), run)
    masker = await run_in_threadpool(masker)

    def state_of() -> dict[str, Any]:
        now = runs.get(ctx.store(), run["id"])
        return {"state": now["state"], "exit_code": now["exit_code"], "reason": now["reason"]}

    async def stream() -> AsyncIterator[bytes]:
        nonlocal offset
        pending = b""
        shown = None
        quiet = 0.0
        yield b"retry: 1000\n\n"
        while True:
            state = await run_in_threadpool(state_of)
            data, offset = await run_in_threadpool(_read_log, path, offset)
            if data:
                quiet = 0.0
                *lines, pending = (pending + data).split(b"\n")
                for raw in lines:
                    yield sse("line", log_line(raw, masker))
            if state != shown:
                shown = state
                yield sse("state", json.dumps(state))
            if state["state"] in TERMINAL and not data:
                if pending:
                    yield sse("line", log_line(pending, masker))
                yield sse("end", json.dumps(state))
                return
            if not data:
                await asyncio.sleep(0.2)
                quiet += 0.2
                if quiet >= KEEPALIVE_S:
                    quiet = 0.0
                    yield b": keepalive\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)
