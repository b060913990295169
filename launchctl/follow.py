"""Follow a run: stream its log as it grows and return once the run has ended."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from launchctl.states import TERMINAL, State
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
) -> Row:
    """Write the run's log through ``write``; with ``follow``, keep going until it ends."""
    run = store.runs.get(run_id)
    path = log_path(store, run)
    offset = 0
    waited = False
    while True:
        state = store.runs.state(run["id"])
        offset = _pump(path, offset, write)
        if not follow or state in TERMINAL:
            offset = _pump(path, offset, write)
            return store.runs.get(run["id"])
        if state == State.QUEUED and on_wait is not None and not waited:
            waited = True
            on_wait(run)
        time.sleep(poll_s)


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
