"""Follow a run: stream its log as it grows and return once the run has ended."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from launchctl.states import ACTIVE, TERMINAL, State
from launchctl.store import Row, Store


def log_path(store: Store, run: Row) -> Path:
    return Path(run["log_path"]) if run.get("log_path") else store.run_dir(run["id"]) / "output.log"


def follow(
    store: Store,
    run_id: str,
    write: Callable[[bytes], None],
    *,
    follow: bool = True,
    poll_s: float = 0.05,
    on_wait: Callable[[Row], None] | None = None,
    on_lost: Callable[[str], None] | None = None,
) -> Row:
    """Write the run's log through ``write``; with ``follow``, keep going until it ends.

    ``on_wait(run)``: once, while the run is queued. ``on_lost(line)``: once, when the
    agent that holds the run is a process of this machine that is gone (killed, or a
    direct launch's terminal closed): the run's end is then recorded only when another
    agent takes it over, and the line says which command does."""
    run = store.runs.get(run_id)
    path = log_path(store, run)
    offset = 0
    waited = lost_said = False
    checked = time.monotonic()
    while True:
        state = store.runs.state(run["id"])
        offset = _pump(path, offset, write)
        if not follow or state in TERMINAL:
            offset = _pump(path, offset, write)
            return store.runs.get(run["id"])
        if state == State.QUEUED and on_wait is not None and not waited:
            waited = True
            on_wait(run)
        if on_lost is not None and not lost_said and time.monotonic() - checked >= LOST_CHECK_S:
            checked = time.monotonic()
            line = _lost_agent(store, run["id"])
            if line is not None:
                lost_said = True
                on_lost(line)
        time.sleep(poll_s)


LOST_CHECK_S = 2.0  # how often a follower looks at the holding agent's process


def _lost_agent(store: Store, run_id: str) -> str | None:
    """Why the run will not end by itself: the agent holding it ran here and is gone."""
    import socket

    from launchctl.agent.recovery import agent_alive

    run = store.runs.get(run_id)
    if run["state"] not in ACTIVE or not run["agent_id"]:
        return None
    agent = store.db.one("SELECT host, pid, stopped_at FROM agents WHERE id = ?", [run["agent_id"]])
    if agent is None or agent["host"] != socket.gethostname() or agent["stopped_at"] is not None:
        return None
    if agent_alive(int(agent["pid"])):
        return None
    queue = run["queue_name"] or "default"
    return (
        f"run {run['id']}'s agent (pid {agent['pid']}) is gone; the run is recorded as it"
        f" ends once an agent takes it over: `launchctl agent -q {queue}`"
    )


def _pump(path: Path, offset: int, write: Callable[[bytes], None]) -> int:
    from launchctl.runners.logfile import read_log

    try:
        fh = read_log(path)  # never a FIFO the run put in its place: that would block
    except OSError:
        return offset  # not there (yet), or not a plain file any more
    with fh:
        fh.seek(offset)
        while chunk := fh.read(65536):
            write(chunk)
            offset += len(chunk)
    return offset


def exit_status(run: Row) -> int:
    """The command's exit status for a finished run, as CI expects it."""
    if run["state"] == State.FINISHED:
        return 0
    if run["state"] == State.STOPPED:
        return 130
    code = run.get("exit_code")
    return code if isinstance(code, int) and code > 0 else 1
