"""`launchctl agent`: work through one or more queues."""

from __future__ import annotations

import signal
from typing import Any

import typer

from launchctl.cli.common import open_store
from launchctl.cli.output import err


def agent(
    queue: list[str] = typer.Option([], "--queue", "-q", help="Queue to serve (repeatable)."),
    max_jobs: int | None = typer.Option(
        None, "--max-jobs", "-j", help="Runs at once; -1 for unlimited (default 1, as W&B)."
    ),
    config: str | None = typer.Option(
        None,
        "--config",
        "-c",
        help="Agent config: JSON/YAML file or string (queues, max_jobs, env).",
    ),
    burst: bool = typer.Option(False, "--burst", help="Exit once nothing is left to claim."),
    grace: float | None = typer.Option(
        None,
        "--grace",
        help="Seconds between SIGTERM and SIGKILL when stopping a run (default 10).",
    ),
    poll: float | None = typer.Option(
        None, "--poll", help="Fallback poll in seconds; new work wakes the agent at once anyway."
    ),
) -> None:
    """Claim runs from queues and run them, up to --max-jobs at a time.

    First Ctrl-C (or SIGTERM): stop claiming, let running runs finish.
    Second: stop them; they are recorded as stopped.

    \b
    Examples:
      launchctl agent -q default
      launchctl agent -q gpu -q cpu -j 4
      launchctl agent -q default --burst      # drain the queue, then exit
    """
    from launchctl.agent import Agent, AgentOptions
    from launchctl.agent.config import load_agent_config

    settings = load_agent_config(config, queues=queue, max_jobs=max_jobs, grace=grace, poll=poll)
    store = open_store()
    opts = AgentOptions(
        max_jobs=settings.max_jobs,
        grace_s=settings.grace_s,
        fallback_poll_s=settings.poll_s,
        env=settings.env,
    )
    worker = Agent(store, settings.queues, opts, say=err)
    worker.start()
    limit = "unlimited" if opts.max_jobs < 0 else str(opts.max_jobs)
    err(
        f"agent {worker.id} serving {', '.join(settings.queues)} with max_jobs {limit}"
        + (" (burst)" if burst else "")
    )
    signals = 0

    def on_signal(sig: int, _frame: Any) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            err(
                "stopping: no new runs will be claimed; running runs finish"
                " (signal again to stop them)"
            )
            worker.drain()
        else:
            err("stopping running runs")
            worker.stop_all()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    worker.run(burst=burst)
    err(f"agent {worker.id} stopped")
