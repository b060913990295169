"""The pages: overview, runs, one run, a queue's template tiles and launch form, sweeps.

Each page is read, and each change made, through the core functions the CLI calls, in a
worker thread (SQLite and the core are synchronous). A refusal is the CLI's own message:
403 for a role refusal, 404 for something that does not exist, 400 for the rest.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from launchctl.errors import LaunchctlError
from launchctl.ui.context import (
    Context,
    error_response,
    masker,
    render,
    status_of,
)

LOG_TAIL = 64 * 1024  # the run page starts with this much of the log; SSE adds the rest
RUNS_LIMIT = 200
MASK = "***"


def form_status(exc: LaunchctlError) -> int:
    """A refused form: 403 for a role refusal, else 400 (a job named in the form that does
    not exist is a refused value, not a missing page)."""
    return 403 if status_of(exc) == 403 else 400


async def _call(ctx: Context, fn: Callable[..., Any], *args: Any) -> Any:
    return await run_in_threadpool(fn, *args)


def masked_spec(spec: dict[str, Any], mask: Any) -> str:
    """The spec as JSON, every secret reference's place shown as ``***`` (which secret it
    names stays visible) and every secret value masked."""
    from launchctl.secrets import is_secret_ref

    def walk(value: Any) -> Any:
        if is_secret_ref(value):
            return f"{MASK} (secret {value['secret']})"
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return str(mask.mask_text(json.dumps(walk(spec), indent=2, sort_keys=True)))


def resolved_spec(ctx: Context, run: dict[str, Any]) -> dict[str, Any]:
    """The run's launch spec with ``resolved``: its template values and resource args as
    its queue's current config gives them (what an agent would run), when they resolve."""
    from launchctl import queues
    from launchctl.resolve import render as resolve

    spec = dict(run["spec"])
    if not run.get("queue_name"):
        return spec
    try:
        queue = queues.show(ctx.store(), run["queue_name"])
        if queue["id"] != run.get("queue_id"):
            return spec
        got = resolve(queue, run["spec"], str(run["resource"]))
    except (LaunchctlError, KeyError, TypeError, ValueError):
        return spec
    spec["resolved"] = {"template_values": got.values, "resource_args": got.resource_args}
    return spec


# -- overview ------------------------------------------------------------------------------


async def overview(ctx: Context, request: Request) -> Response:
    from launchctl import overview as ov

    data = await _call(ctx, lambda: ov.status(ctx.store()))
    return render(ctx, "overview.html", title="overview", data=data)


# -- runs ----------------------------------------------------------------------------------

FILTERS = ("queue", "state", "job", "project", "since")


def _runs(ctx: Context, filters: dict[str, str]) -> dict[str, Any]:
    from launchctl import runs

    states = [s for s in filters.get("state", "").split(",") if s]
    after = ctx.store().runs.last_event_id()  # before the listing: the stream catches up
    rows = runs.listing(
        ctx.store(), queue=filters.get("queue") or None, states=states, limit=RUNS_LIMIT,
        job=filters.get("job") or None, project=filters.get("project") or None,
        since=filters.get("since") or None,
    )  # fmt: skip
    from launchctl.ui.events import run_payload
    from launchctl.workflow import annotate

    annotate(ctx.store(), rows)  # issue 18: the state cell says why a queued run waits
    now = time.time()
    keys = runs.differing_keys(rows)
    return {
        "rows": [dict(run_payload(r, now), cells=[runs.config_value(r, k) for k in keys])
                 for r in rows],
        "keys": keys,
        "after": after,
    }  # fmt: skip


async def runs_page(ctx: Context, request: Request) -> Response:
    filters = {k: request.query_params.get(k, "").strip() for k in FILTERS}
    try:
        data = await _call(ctx, _runs, ctx, filters)
    except LaunchctlError as exc:
        return render(ctx, "runs.html", status_of(exc), title="runs", filters=filters,
                      rows=[], keys=[], after=0, error=str(exc))  # fmt: skip
    return render(ctx, "runs.html", title="runs", filters=filters, error=None, **data)


# -- one run -------------------------------------------------------------------------------

# The lines a build writes into the run's log (launchctl.images.builder): what it builds,
# why it builds again, and one line per step (BuildKit's own output is in build.log).
BUILD_STEP = re.compile(r"^launchctl: (building .*|base .*|build step \d+/\d+.*|image build.*)$")
BUILD_HEAD = 256 * 1024  # the build comes first in a run's log: read its steps from here


def _run_view(ctx: Context, run_id: str) -> dict[str, Any]:
    from launchctl import runs, workflow

    run = runs.details(ctx.store(), run_id)
    workflow.annotate(ctx.store(), [run])  # issue 18: what a queued run waits for
    stalled = run.get("stalled_at") if run["state"] == "running" else None
    mask = masker()
    path = Path(run["log_path"])
    from launchctl.runners.logfile import read_log

    try:
        with read_log(path) as fh:  # never a FIFO the run put in its place
            size = os.fstat(fh.fileno()).st_size
            fh.seek(max(0, size - LOG_TAIL))
            raw = fh.read(LOG_TAIL)
    except OSError:
        size, raw = 0, b""
    if size > LOG_TAIL and b"\n" in raw:  # start at a whole line
        raw = raw[raw.index(b"\n") + 1 :]
    from launchctl.ui.events import log_line

    lines = [log_line(r, mask) for r in raw.split(b"\n")]
    if lines and lines[-1] == "":
        lines.pop()
    built = any(e["to_state"] == "building" for e in run["events"])
    steps: list[str] = []
    if built:
        try:
            with open(path, "rb") as fh:
                head = fh.read(BUILD_HEAD)
        except OSError:
            head = b""
        steps = [ln for r in head.split(b"\n") if BUILD_STEP.match(ln := log_line(r, mask))]
        steps += [  # the agent's word on the build: "built (generated from template ...)"
            str(mask.mask_text(e["message"]))
            for e in run["events"]
            if e["from_state"] == "building" and e["message"]
        ]
    return {
        "run": run,
        "spec": masked_spec(resolved_spec(ctx, run), mask),
        "reason": mask.mask_text(run["reason"]) if run.get("reason") else None,
        "events": [dict(e, message=mask.mask_text(e["message"] or "")) for e in run["events"]],
        "built": built,
        "steps": steps,
        "log": "\n".join(lines),
        "offset": size,
        "sets": "\n".join(f"{k}={runs.config_value(run, k)}" for k in runs.run_config(run)),
        "ended": run["state"] in ("finished", "failed", "stopped"),
        "waits": [mask.mask_text(w) for w in workflow.waiting_for(run)],
        "stalled": workflow.local_time(stalled) if stalled else None,
        "state_cell": workflow.state_cell(run),
    }


async def run_page(ctx: Context, request: Request, *, status: int = 200,
                   error: str | None = None, sets: str | None = None) -> Response:  # fmt: skip
    try:
        view = await _call(ctx, _run_view, ctx, request.path_params["run_id"])
    except LaunchctlError as exc:
        return error_response(ctx, exc)
    if sets is not None:
        view["sets"] = sets
    return render(ctx, "run.html", status, title=f"run {view['run']['id']}", error=error, **view)


async def cancel(ctx: Context, request: Request) -> Response:
    from launchctl import runs

    run_id = request.path_params["run_id"]
    try:
        run, _state = await _call(ctx, lambda: runs.cancel(ctx.store(), run_id))
    except LaunchctlError as exc:
        return await run_page(ctx, request, status=status_of(exc), error=str(exc))
    return RedirectResponse(f"/runs/{quote(run['id'], safe='')}", status_code=303)


async def _hold(ctx: Context, request: Request, held: bool) -> Response:
    """Hold or release a queued run (issue 18), through ``workflow.hold`` as ``runs
    hold/release`` does: the same role check (its author, or an admin of its entity or
    its queue's) and the same refusals."""
    from launchctl import workflow

    run_id = request.path_params["run_id"]
    try:
        run, _changed = await _call(ctx, lambda: workflow.hold(ctx.store(), run_id, held))
    except LaunchctlError as exc:
        return await run_page(ctx, request, status=status_of(exc), error=str(exc))
    return RedirectResponse(f"/runs/{quote(run['id'], safe='')}", status_code=303)


async def hold(ctx: Context, request: Request) -> Response:
    return await _hold(ctx, request, True)


async def release(ctx: Context, request: Request) -> Response:
    return await _hold(ctx, request, False)


async def rerun(ctx: Context, request: Request) -> Response:
    from launchctl.launch import rerun as do_rerun

    form = await request.form()
    text = str(form.get("set") or "")
    sets = [ln.strip() for ln in text.splitlines() if ln.strip()]
    run_id = request.path_params["run_id"]
    try:
        new = await _call(ctx, lambda: do_rerun(ctx.store(), run_id, sets=sets))
    except LaunchctlError as exc:
        return await run_page(ctx, request, status=form_status(exc), error=str(exc), sets=text)
    return RedirectResponse(f"/runs/{quote(new['id'], safe='')}", status_code=303)


# -- a queue: template tiles, the admin's edit form, the launch form -----------------------


def _queue_view(ctx: Context, name: str) -> dict[str, Any]:
    from launchctl import jobs, queues, teams

    store = ctx.store()
    queue = queues.show(store, name)
    fields = queues.template_fields(store, name)
    try:
        teams.require_admin(store, queue["entity"])
        admin = True
    except LaunchctlError:
        admin = False
    try:
        job_names = sorted({f"{j['entity']}/{j['name']}" for j in jobs.listing(store)})
    except (LaunchctlError, KeyError, TypeError):
        job_names = []
    return {"queue": queue, "fields": fields, "admin": admin, "jobs": job_names}


def field_input(field: dict[str, Any]) -> dict[str, Any]:
    """How a launch form asks for one template field: a select for options, a number
    input with min/max for numbers, text otherwise; and the limits said in words."""
    kind = field.get("type", "string")
    limits = []
    if "minimum" in field:
        limits.append(f"min {field['minimum']}")
    if "maximum" in field:
        limits.append(f"max {field['maximum']}")
    if field.get("enum"):
        limits.append("one of " + ", ".join(str(o) for o in field["enum"]))
    if "default" in field:
        limits.append(f"default {field['default']}")
    widget = (
        "select" if field.get("enum") else "number" if kind in ("integer", "number") else "text"
    )
    step = "1" if kind == "integer" else "any"
    return {"widget": widget, "step": step, "limits": "; ".join(limits) or kind}


FIELD_ERROR = re.compile(
    r"template variable (?P<a>[A-Za-z0-9_-]+)\b|does not support overriding (?P<b>[A-Za-z0-9_-]+)"
)


async def queue_page(ctx: Context, request: Request, *, status: int = 200,
                     error: str | None = None, field_errors: dict[str, str] | None = None,
                     values: dict[str, str] | None = None,
                     template_error: str | None = None) -> Response:  # fmt: skip
    try:
        view = await _call(ctx, _queue_view, ctx, request.path_params["name"])
    except LaunchctlError as exc:
        return error_response(ctx, exc)
    inputs = {f["name"]: field_input(f) for f in view["fields"]}
    return render(
        ctx, "queue.html", status, title=f"queue {view['queue']['name']}", inputs=inputs,
        error=error, field_errors=field_errors or {}, values=values or {},
        template_error=template_error, **view,
    )  # fmt: skip


def _launch(ctx: Context, name: str, form: dict[str, str], fields: list[str]) -> dict[str, Any]:
    from launchctl.launch import LaunchRequest, prepare_spec, submit

    set_vars = [f"{f}={form[f]}" for f in fields if form.get(f, "") != ""]
    sets = [ln.strip() for ln in form.get("set", "").splitlines() if ln.strip()]
    req = LaunchRequest(
        queue=name, job=form.get("job") or None, set_vars=set_vars, sets=sets,
        name=form.get("run_name") or None, priority=form.get("priority") or None,
        entry_point=form.get("entry_point") or None, project=form.get("project") or None,
    )  # fmt: skip
    notes: list[str] = []
    spec = prepare_spec(req, say=notes.append)
    return dict(submit(ctx.store(), spec, say=notes.append))


async def launch(ctx: Context, request: Request) -> Response:
    from launchctl import queues

    name = request.path_params["name"]
    raw = await request.form()
    form = {k: str(v) for k, v in raw.items() if isinstance(v, str) and k != "_csrf"}
    try:
        fields = [f["name"] for f in await _call(ctx, queues.template_fields, ctx.store(), name)]
        run = await _call(ctx, _launch, ctx, name, form, fields)
    except LaunchctlError as exc:
        message = str(exc)
        match = FIELD_ERROR.search(message)
        field = (match.group("a") or match.group("b")) if match else None
        field_errors = {field: message} if field else {}
        return await queue_page(
            ctx, request, status=form_status(exc), error=None if field else message,
            field_errors=field_errors, values=form,
        )  # fmt: skip
    return RedirectResponse(f"/runs/{quote(run['id'], safe='')}", status_code=303)


def _number(text: str, what: str) -> int | float:
    from launchctl.errors import UsageError

    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise UsageError(f"{what} must be a number, got {text!r}") from None


def _template_edit(ctx: Context, name: str, form: dict[str, str]) -> None:
    from launchctl import queues
    from launchctl.errors import UsageError

    variable = form.get("field", "").strip()
    kind = form.get("type", "").strip()
    if not variable or not kind:
        raise UsageError("give the field's name and its type")
    schema: dict[str, Any] = {"type": kind}
    if form.get("minimum", "").strip():
        schema["minimum"] = _number(form["minimum"].strip(), "minimum")
    if form.get("maximum", "").strip():
        schema["maximum"] = _number(form["maximum"].strip(), "maximum")
    if form.get("options", "").strip():
        schema["enum"] = [o.strip() for o in form["options"].split(",") if o.strip()]
    if form.get("default", "").strip():
        schema["default"] = form["default"].strip()
    if form.get("description", "").strip():
        schema["description"] = form["description"].strip()
    queues.set_template(ctx.store(), name, {variable: schema})


async def template_edit(ctx: Context, request: Request) -> Response:
    name = request.path_params["name"]
    raw = await request.form()
    form = {k: str(v) for k, v in raw.items() if isinstance(v, str) and k != "_csrf"}
    try:
        await _call(ctx, _template_edit, ctx, name, form)
    except LaunchctlError as exc:
        return await queue_page(ctx, request, status=form_status(exc), template_error=str(exc))
    return RedirectResponse(f"/queues/{quote(name, safe='')}", status_code=303)


# -- sweeps --------------------------------------------------------------------------------


async def sweeps_page(ctx: Context, request: Request) -> Response:
    from launchctl.sweeps import manage

    rows = await _call(ctx, lambda: manage.listing(ctx.store()))
    return render(ctx, "sweeps.html", title="sweeps", sweeps=rows)


def _sweep_view(ctx: Context, sweep_id: str) -> dict[str, Any]:
    from launchctl.sweeps import report
    from launchctl.ui import plots

    built = report.load(ctx.store(), sweep_id)
    scored = [t for t in built.trials if t.get("metric") is not None
              and report.trial_state(t) != "failed"]  # fmt: skip
    return {
        "sweep": built.sweep,
        "trials": [dict(t, state=report.trial_state(t)) for t in built.trials],
        "params": built.param_names,
        "metric": built.metric,
        "goal": built.goal,
        "plots": [
            (p, plots.scatter(p, built.metric or "metric", scored, built.best)) for p in
            built.param_names
        ],
    }  # fmt: skip


async def sweep_page(ctx: Context, request: Request) -> Response:
    try:
        view = await _call(ctx, _sweep_view, ctx, request.path_params["sweep_id"])
    except LaunchctlError as exc:
        return error_response(ctx, exc)
    return render(ctx, "sweep.html", title=f"sweep {view['sweep']['id']}", **view)
