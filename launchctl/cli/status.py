"""`launchctl status`: the queues, live agents, GPUs in use and active runs on one screen,
as `pueue status` gives at a glance; `--watch` refreshes it (issue 12, item 7)."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from typing import Any

import typer

from launchctl.cli.common import JSON_OPTION, open_store
from launchctl.cli.output import clean, colour, duration, emit_json, table
from launchctl.errors import UsageError

# Clear the screen and go home, between two frames on a terminal.
_CLEAR = "\x1b[H\x1b[2J"
TERMINAL_STATES = ("finished", "failed", "stopped")
# Why queued runs wait (launchctl.overview.WAIT_REASONS), as the queues table heads them:
# held (runs hold), after other runs (--after*), until a time (--delay/--at, a retry
# backoff), at a limit on what is in flight (an array's %N, limits.per_user).
WAIT_COLUMNS = {"held": "held", "after": "after", "time": "delayed", "limit": "at limit"}


def status(
    as_json: bool = JSON_OPTION,
    watch: bool = typer.Option(
        False, "--watch", "-w", help="Refresh every --interval seconds until Ctrl-C."
    ),
    interval: float = typer.Option(
        2.0, "--interval", "-n", metavar="SECONDS", help="Seconds between refreshes (--watch)."
    ),
) -> None:
    """Show queues with their runs by state, live agents with their heartbeats and slots,
    GPUs in use and the runs agents hold now.

    With --watch the screen refreshes until Ctrl-C (exit 0); piped, each refresh is
    printed after the last (with --json, one JSON object a line).

    \b
    Example:
      launchctl status
      launchctl status --watch -n 5
      launchctl status --json
    """
    if not interval > 0 or interval > 86400:
        raise UsageError(f"--interval must be over 0 and at most 86400 seconds, got {interval:g}")
    from launchctl.overview import status as overview

    store = open_store()
    if not watch:
        if as_json:
            emit_json(overview(store))
        else:
            _print(overview(store))
        return
    on_terminal = sys.stdout.isatty() and not as_json
    colour()  # decided on the real stdout, before frames are drawn into a buffer
    try:
        while True:
            shown = overview(store)
            if as_json:
                sys.stdout.write(json.dumps(shown, sort_keys=True, default=str) + "\n")
            else:  # the frame is drawn in one write, so a terminal does not flicker
                frame = io.StringIO()
                with contextlib.redirect_stdout(frame):
                    _print(shown, every=interval)
                sys.stdout.write((_CLEAR if on_terminal else "\n") + frame.getvalue())
            sys.stdout.flush()
            time.sleep(interval)
    except KeyboardInterrupt:  # Ctrl-C ends a watch: that is how it is meant to end
        if on_terminal:
            sys.stdout.write("\n")
        return


def _print(shown: dict[str, Any], *, every: float | None = None) -> None:
    queues, agents, gpus, runs = (
        shown["queues"],
        shown["agents"],
        shown["gpus"],
        shown["active_runs"],
    )
    queued = sum(q["queued"] for q in queues)
    head = (
        f"{len(agents)} agent{'s' * (len(agents) != 1)} live, {len(runs)} run"
        f"{'s' * (len(runs) != 1)} active, {queued} queued"
    )
    if gpus["total"] or gpus["in_use"]:
        head += f", GPUs {gpus['in_use']}/{gpus['total']} in use"
    at = shown["at"].replace("T", " ")[:19]
    watching = f"  (every {every:g}s)" if every is not None else ""
    _write(f"{at}  {head}{watching}")

    _write("")
    if not queues:
        _write("Queues: none (launchctl queue create NAME)")
    else:
        _write("Queues")
        extra = [s for s in ("preempted",) if any(q["counts"].get(s) for q in queues)]
        # issue 18: why queued runs wait, and silent running runs, when any queue has some
        why = [w for w in WAIT_COLUMNS if any(q.get("waiting", {}).get(w) for q in queues)]
        stalled = ["stalled"] if any(q.get("stalled") for q in queues) else []
        headers = ["queue", "resource", "queued", *(WAIT_COLUMNS[w] for w in why), "active",
                   *stalled, *TERMINAL_STATES, *extra, "agents"]  # fmt: skip
        table(
            (
                [
                    q["name"] + (" (paused)" if q["paused"] else ""),
                    q["resource"],
                    q["queued"],
                    *(q["waiting"][w] for w in why),
                    q["active"],
                    *(q["stalled"] for _ in stalled),
                    *(q["counts"].get(s, 0) for s in (*TERMINAL_STATES, *extra)),
                    q["agents"],
                ]
                for q in queues
            ),
            headers,
        )

    _write("")
    silent = shown["silent_agents"]
    note = f" ({silent} silent: killed or hung, no heartbeat for 2 minutes)" if silent else ""
    if not agents:
        _write(f"Agents: none live (launchctl agent -q QUEUE){note}")
    else:
        _write(f"Agents{note}")
        table(
            (
                [
                    a["id"],
                    a["host"],
                    a["pid"],
                    ",".join(a["queues"]),
                    f"{a['used']}/{a['max_jobs'] if a['max_jobs'] >= 0 else 'any'}",
                    f"{a['heartbeat_age_s']:.0f}s ago",
                ]
                for a in agents
            ),
            ["agent", "host", "pid", "queues", "slots", "heartbeat"],
        )

    if gpus["devices"]:
        _write("")
        _write(f"GPUs: {gpus['in_use']} of {gpus['total']} in use")
        table(
            (
                [d["host"], d["index"], d["name"], ", ".join(d["runs"]) or None]
                for d in gpus["devices"]
            ),
            ["host", "gpu", "name", "runs"],
        )

    stalled_runs = shown.get("stalled_runs") or []
    if stalled_runs:  # issue 18: running runs an agent found silent for their stall_after
        _write("")
        _write("Stalled runs (no output for their queue's stall_after)")
        table(
            (
                [r["id"], r["name"], r["queue"] or "(direct)", r["agent"],
                 r["stalled_at"].replace("T", " ")[:19], _since(r["stalled_s"])]
                for r in stalled_runs
            ),
            ["run", "name", "queue", "agent", "silent since", "for"],
        )  # fmt: skip

    _write("")
    if not runs:
        _write("Active runs: none")
        return
    _write("Active runs")
    table(
        (
            [
                r["id"],
                r["name"],
                r["queue"] or "(direct)",
                r["state"],
                r["agent"],
                ",".join(str(i) for i in r["gpus"]) if r["gpus"] else None,
                r["attempt"],
                _since(r["running_s"]),
            ]
            for r in runs
        ),
        ["run", "name", "queue", "state", "agent", "gpus", "attempt", "running"],
    )


def _since(seconds: float | None) -> str | None:
    return None if seconds is None else duration(time.time() - seconds, None)


def _write(text: str) -> None:
    sys.stdout.write(clean(text) + "\n")
