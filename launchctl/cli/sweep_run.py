"""`launchctl sweep run ID`: schedule one sweep in the foreground (issue 15)."""

from __future__ import annotations

import signal
from typing import Any

import typer

from launchctl.cli.common import open_store
from launchctl.errors import UsageError


def run(
    sweep_id: str = typer.Argument(..., metavar="SWEEP_ID", help="The sweep to schedule."),
    poll: float = typer.Option(
        1.0, "--poll", metavar="SECONDS", help="Seconds between passes when nothing wakes it."
    ),
) -> None:
    """Schedule a sweep in the foreground: queue its trials, score them, until it is done.

    An agent serving the sweep's queue does this by itself; use this when none does
    scheduling (the trials still need an agent to run them). Keeps at most num_workers
    trials queued or running; Ctrl-C stops scheduling (the runs go on).

    \b
    Example:
      launchctl sweep run 3k9x2m1a
      launchctl agent -q gpu --gpus 0,1,2,3     # elsewhere: runs the trials
    """
    if not 0 < poll <= 3600:
        raise UsageError(f"--poll must be over 0 and at most 3600 seconds, got {poll:g}")
    from launchctl.sweeps import scheduler

    store = open_store()
    stop = False

    def on_signal(_sig: int, _frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    state = scheduler.run_foreground(
        store,
        sweep_id,
        poll_s=poll,
        say=lambda line: print(line, flush=True),
        should_stop=lambda: stop,
    )
    print(f"sweep {sweep_id}: {state}", flush=True)
