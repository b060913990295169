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
    gpus: str | None = typer.Option(
        None,
        "--gpus",
        help="GPUs to hand out, e.g. 0,1,2,3 or 0-3; each run gets its own (default: all that"
        " NVML or nvidia-smi find; none: no GPU scheduling). -j then defaults to their number.",
    ),
    gpu_busy_mb: int = typer.Option(
        1024,
        "--gpu-busy-mb",
        help="A GPU none of our runs hold, with more MiB in use than this, counts as busy.",
    ),
    gpu_backfill_s: float = typer.Option(
        60.0,
        "--gpu-backfill-s",
        help="Smaller runs may pass a run waiting for more GPUs only this long; then its"
        " GPUs are reserved for it.",
    ),
    requeue_running: bool = typer.Option(
        False,
        "--requeue-running",
        help="On SIGINT/SIGTERM, stop running runs and put them back in their queues"
        " (drain for maintenance); they resume as the same runs.",
    ),
    resume_queues: bool = typer.Option(
        False,
        "--resume-queues",
        help="After an unclean stop, keep claiming from its queues instead of pausing them.",
    ),
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
      launchctl agent -q gpu --gpus 0,1,2,3   # each run gets its own GPUs
      launchctl agent -q gpu --requeue-running  # Ctrl-C requeues running runs
    """
    from launchctl.agent import Agent
    from launchctl.agent.config import load_agent_config

    queues, opts = load_agent_config(
        config, queues=queue, max_jobs=max_jobs, grace=grace, poll=poll
    )
    store = open_store()
    opts.requeue_running = requeue_running
    opts.resume_queues = resume_queues
    from launchctl.gpus.allocator import options_from_flags

    opts.gpus = options_from_flags(gpus, busy_mb=gpu_busy_mb, backfill_s=gpu_backfill_s)
    if opts.gpus is not None and max_jobs is None and config is None:
        opts.max_jobs = len(opts.gpus.devices)  # a run per GPU, unless -j says otherwise
    worker = Agent(store, queues, opts, say=err)
    worker.start()
    limit = "unlimited" if opts.max_jobs < 0 else str(opts.max_jobs)
    err(
        f"agent {worker.id} serving {', '.join(queues)} with max_jobs {limit}"
        + (" (burst)" if burst else "")
    )
    if worker.gpus is not None:
        from launchctl.cli.gpus import startup_lines

        for line in startup_lines(worker.gpus):
            err(line)
    signals = 0

    def on_signal(sig: int, _frame: Any) -> None:
        nonlocal signals
        signals += 1
        err(worker.on_signal(signals))

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    worker.run(burst=burst)
    err(f"agent {worker.id} stopped")
