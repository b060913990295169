"""`launchctl agent`: work through one or more queues."""

from __future__ import annotations

import os
import sys
from typing import Any

import typer

from launchctl.cli.common import open_store
from launchctl.cli.output import err


def agent(
    queue: list[str] = typer.Option(
        [], "--queue", "-q", help="Queue to serve (repeatable; -q a,b names two)."
    ),
    entity: str | None = typer.Option(
        None,
        "--entity",
        "-e",
        help="The entity whose queues it serves (default: WANDB_ENTITY, the config's entity);"
        " a queue of another entity is refused.",
    ),
    max_jobs: str | None = typer.Option(
        None,
        "--max-jobs",
        "-j",
        help="Runs at once; -1 for unlimited (default: WANDB_LAUNCH_MAX_JOBS, the config's,"
        " 1 as W&B).",
    ),
    config: str | None = typer.Option(
        None,
        "--config",
        "-c",
        help="Agent config (W&B's launch-config.yaml keys): a JSON/YAML file or string;"
        " default ~/.config/wandb/launch-config.yaml when present.",
    ),
    max_schedulers: str | None = typer.Option(
        None,
        "--max-schedulers",
        help="W&B's sweep schedulers at once (accepted; no sweep scheduler runs here).",
    ),
    log_file: str | None = typer.Option(
        None,
        "--log-file",
        "-l",
        help="Also write the agent's own log lines to this file (- for stdout).",
    ),
    verbose: int = typer.Option(
        0,
        "--verbose",
        "-v",
        count=True,
        help="More detail: -v a status line every 20 s (else every 5 min); -vv also every"
        " setting read at start.",
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
    remote_queue: list[str] = typer.Option(
        [],
        "--remote-queue",
        help="Also take work from a W&B run queue ENTITY/PROJECT/QUEUE (repeatable); its items"
        " run on the local queue QUEUE (or ENTITY/PROJECT/QUEUE=LOCAL), under its rules.",
    ),
    sync: bool = typer.Option(
        False,
        "--sync",
        help="Also sync runs to the W&B server in the background (`launchctl sync`).",
    ),
    sync_interval: float = typer.Option(
        60.0, "--sync-interval", help="With --sync: seconds between two sync passes."
    ),
    base_url: str | None = typer.Option(
        None,
        "--base-url",
        help="The W&B server for --remote-queue and --sync (default: as `launchctl sync`).",
    ),
    ui: bool = typer.Option(
        False, "--ui", help="Also serve the web view on loopback (as `launchctl ui`)."
    ),
    ui_port: int = typer.Option(
        8765, "--ui-port", help="With --ui: the web view's port (0: any free port)."
    ),
) -> None:
    """Claim runs from queues and run them, up to --max-jobs at a time.

    First Ctrl-C (or SIGTERM): stop claiming, let running runs finish.
    Second: stop them; they are recorded as stopped.

    \b
    Examples:
      launchctl agent -q default
      launchctl agent -e my-team -q default -j 4   # as W&B's launch-agent
      launchctl agent -c ~/.config/wandb/launch-config.yaml -l agent.log -v
      launchctl agent -q gpu -q cpu -j 4
      launchctl agent -q default --burst      # drain the queue, then exit
      launchctl agent -q gpu --gpus 0,1,2,3   # each run gets its own GPUs
      launchctl agent -q gpu --requeue-running  # Ctrl-C requeues running runs
      launchctl agent --remote-queue my-team/model-registry/gpu --sync  # serve a W&B queue
      launchctl agent -q default --ui        # and the web view on 127.0.0.1:8765
    """
    import gc

    gc.disable()  # while its modules load and it sets up (see launchctl/cli/__init__.py)
    # Its helper threads (the store watch, the hooks, the reaper) give the interpreter back
    # to the loop within 1 ms rather than Python's 5 (issue 17: about 2% of a drain here),
    # from the start: the store watch's thread, loading its watcher, held up the agent's
    # start for up to 5 ms at Python's interval.
    sys.setswitchinterval(0.001)
    from launchctl.agent.early import start_spawner

    start_spawner()  # beside the agent's own start (issue 17)
    from launchctl.agent import Agent
    from launchctl.agent.config import check_entity, load_agent_config

    if ui:  # the web view's extra, before anything is opened
        from launchctl.ui.server import require_extra

        require_extra()
    remotes = _remote_queues(remote_queue)
    if sync_interval <= 0:
        from launchctl.errors import UsageError

        raise UsageError(f"--sync-interval must be over 0 seconds (got {sync_interval:g})")
    locals_ = [rq.local for rq in remotes]
    settings = dict(max_jobs=max_jobs, grace=grace, poll=poll, entity=entity,
                    max_schedulers=max_schedulers, verbosity=verbose)  # fmt: skip
    if remotes and not queue:
        from launchctl.errors import UsageError

        try:  # the file's queues, if it names any, and the remote queues' local ones
            queues, opts = load_agent_config(config, queues=[], **settings)  # type: ignore[arg-type]
        except UsageError:
            queues, opts = load_agent_config(config, queues=locals_, **settings)  # type: ignore[arg-type]
    else:
        queues, opts = load_agent_config(config, queues=queue, **settings)  # type: ignore[arg-type]
    queues = list(dict.fromkeys([*queues, *locals_]))
    store = open_store()
    bridge = None
    if remotes:
        from launchctl.sync.remote_agent import check_local_queues

        check_local_queues(store, remotes)
    check_entity(store, queues, opts.entity, opts.sources.get("entity", ""))
    web = None
    if ui:  # the web view beside the agent (issue 16): bound now, a bad port refused first
        from launchctl.ui.server import Server

        web = Server("127.0.0.1", ui_port)
    say = _logger(log_file)  # opened once the settings are known good: nothing written before
    opts.requeue_running = requeue_running
    opts.resume_queues = resume_queues
    from launchctl.gpus.allocator import options_from_flags

    opts.gpus = options_from_flags(gpus, busy_mb=gpu_busy_mb, backfill_s=gpu_backfill_s)
    if opts.gpus is not None and "max_jobs" not in opts.sources:
        opts.max_jobs = len(opts.gpus.devices)  # a run per GPU, unless -j says otherwise
    worker = Agent(store, queues, opts, say=say)
    if remotes:
        from launchctl.sync.remote_agent import RemoteBridge

        bridge = RemoteBridge(
            store, remotes, lambda: worker.capacity > 0 and not worker.draining, say,
            base_url=base_url, agent_name=worker.id, max_jobs=opts.max_jobs,
        )  # fmt: skip
        bridge.register()  # a bad key or a queue the server lacks: refused before serving
    worker.start()
    worker.use_spawner()  # a long-lived agent: its plain runs start through one spawner
    for line in banner(worker.id, queues, opts, burst=burst, log_file=log_file):
        say(line)
    for rq in remotes:
        say(f"  W&B queue {rq}: its items run on local queue {rq.local}")
    from launchctl.cli.gpus import gpus_off_line, startup_lines

    for line in startup_lines(worker.gpus) if worker.gpus is not None else [gpus_off_line(gpus)]:
        say(line)

    worker.handle_signals()
    background = None
    if sync:
        from launchctl.sync.background import BackgroundSync

        background = BackgroundSync(sync_interval, say, base_url=base_url)
        background.start()
        say(f"  sync: every {sync_interval:g} s to the W&B server (`launchctl sync status`)")
    if bridge is not None:
        bridge.start()
    from launchctl.hooks import Dispatcher  # hooks when a run ends (issue 18)

    hooks = Dispatcher(worker.id, queues, opts.hooks, say)
    hooks.start()
    if web is not None:
        web.start()
        print(f"launchctl ui: {web.url}", flush=True)
    gc.freeze()  # what it set up lives as long as it does: never looked at by a collection
    gc.enable()
    try:
        worker.run(burst=burst)
    finally:
        # --burst: its runs' hooks first; else a command hook gets a run's --grace
        hooks.stop(drain=burst and worker.signals == 0, timeout=opts.grace_s)
        if bridge is not None:
            bridge.stop()
        if background is not None:
            background.stop()
        if web is not None:
            web.stop()
    say(f"agent {worker.id} stopped")
    _leave(worker)


def _leave(worker: Any) -> None:
    """End the process now that everything is recorded and said: the store closed (its
    WAL folded back), the output flushed, then ``os._exit``. The interpreter's own
    teardown (a collection of every object, each module's dict cleared one by one) cost a
    stopping agent 15-35 ms here, a twentieth of a 500-run ``--burst`` drain (issue 17).
    Nothing is lost by skipping it: the agent's threads are daemons with nothing left to
    do, its log file is flushed line by line, and its spawner ends when its pipe closes.
    """
    import contextlib

    worker.close()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing more can be said
            stream.flush()
    os._exit(0)


def _remote_queues(values: list[str]) -> list[Any]:
    """``--remote-queue`` values, each ENTITY/PROJECT/QUEUE[=LOCAL], once each."""
    if not values:
        return []
    from launchctl.sync.remote_queue import parse_remote_queue

    found = [parse_remote_queue(v) for v in values]
    return list({str(rq): rq for rq in found}.values())


def banner(
    agent_id: str, queues: list[str], opts: Any, *, burst: bool, log_file: str | None
) -> list[str]:
    """What the agent says at start: the settings it resolved, and where each came from
    (W&B's agent prints its resolved config too), then each setting it does not use here."""
    limit = "unlimited" if opts.max_jobs < 0 else str(opts.max_jobs)
    src = opts.sources

    def where(key: str) -> str:
        return f" ({src[key]})" if key in src else ""

    builder = opts.builder.get("type") or "docker"
    lines = [
        f"agent {agent_id} serving {', '.join(queues)} with max_jobs {limit}"
        + (" (burst)" if burst else ""),
        f"  queues: {', '.join(queues)}{where('queues')}",
        f"  entity: {opts.entity or '(any the user may serve)'}{where('entity')}",
        f"  max_jobs: {limit}{where('max_jobs')}",
        f"  config file: {opts.config_file or '(none)'}",
        f"  builder: {builder}" + (" (the agent never builds)" if builder == "noop" else ""),
        f"  grace: {opts.grace_s:g} s{where('grace')}, verbosity {opts.verbosity}",
    ]
    if opts.secure_mode:
        lines.append(f"  secure_mode: on{where('secure_mode')} (no entry point overrides)")
    if log_file:
        lines.append(f"  log file: {'stdout' if log_file == '-' else log_file}")
    if opts.verbosity >= 2:
        from launchctl.buildconfig import masked

        lines.append(f"  builder settings: {masked(opts.builder)}")
        lines.append(f"  registry: {masked(opts.registry)}")
        lines.append(f"  env for runs: {', '.join(sorted(opts.env)) or '(none)'}")
    lines += [f"not used here: {line}" for line in opts.unused]
    return lines


def _logger(log_file: str | None) -> Any:
    """``say``: a line on stderr, and in the log file (``-l``; ``-``: stdout) with the time."""
    if log_file is None:
        return err
    import time

    from launchctl.errors import UsageError

    if log_file == "-":
        stream = sys.stdout
    else:
        try:
            fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            stream = os.fdopen(fd, "w", encoding="utf-8", buffering=1)
        except OSError as exc:
            raise UsageError(
                f"cannot open the log file {log_file} for writing: {exc.strerror}"
            ) from None

    def say(line: str) -> None:
        err(line)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            stream.write(f"{stamp} {line}\n")
            stream.flush()
        except (OSError, ValueError):
            pass  # the log file went away: the line is on stderr all the same

    return say
