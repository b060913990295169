"""`launchctl launch`: queue a run (-q) or run it at once through an embedded agent."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import typer

from launchctl.cli.common import open_store
from launchctl.cli.output import emit_json, err


def launch(
    uri: str | None = typer.Option(None, "--uri", "-u", help="A code directory or a git URL."),
    job: str | None = typer.Option(
        None, "--job", "-j", help="A job: [ENTITY/[PROJECT/]]NAME[:ALIAS]."
    ),
    entry_point: str | None = typer.Option(
        None,
        "--entry-point",
        "-E",
        help="Command to run, e.g. 'python train.py'. Split into words like a shell line"
        " but not run through a shell: for pipes, && or $VARS use -E \"sh -c 'a && b'\".",
    ),
    docker_image: str | None = typer.Option(
        None, "--docker-image", "-d", help="Run this prebuilt image."
    ),
    queue: str | None = typer.Option(
        None,
        "--queue",
        "-q",
        help="Queue the run instead of running it now; a bare -q is the queue 'default'.",
    ),
    config: str | None = typer.Option(
        None, "--config", "-c", help="Launch spec: a JSON/YAML file or JSON string."
    ),
    set_var: list[str] = typer.Option(
        [], "--set-var", "-v", help="Template variable of the queue: name=value (repeatable)."
    ),
    resource_args: str | None = typer.Option(
        None, "--resource-args", "-R", help="Resource args: JSON/YAML file or string."
    ),
    resource: str | None = typer.Option(
        None, "--resource", "-r", help="Resource for a direct launch (default local-process)."
    ),
    dockerfile: str | None = typer.Option(
        None, "--dockerfile", "-D", help="Dockerfile, relative to the job root."
    ),
    priority: str | None = typer.Option(
        None, "--priority", "-P", help="critical, high, medium (default) or low; needs -q."
    ),
    project: str | None = typer.Option(None, "--project", "-p", help="Project name."),
    entity: str | None = typer.Option(None, "--entity", "-e", help="Entity name."),
    name: str | None = typer.Option(None, "--name", envvar="WANDB_NAME", help="Run name."),
    job_name: str | None = typer.Option(
        None, "--job-name", "-J", help="Name of the job that -u creates."
    ),
    git_version: str | None = typer.Option(
        None, "--git-version", "-g", help="Git ref (commit, branch or tag) of a git -u."
    ),
    build_context: str | None = typer.Option(
        None, "--build-context", help="Folder of -u that images are built from."
    ),
    base_image: str | None = typer.Option(
        None, "--base-image", "-B", help="Base image to build the -u job's code on."
    ),
    run_async: bool = typer.Option(
        False, "--async", help="Direct launch: start the run, print its id and return."
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="run_config override key=value; JSON values are typed (repeatable)."
    ),
    args: str | None = typer.Option(None, "--args", help="Arguments appended to the entry point."),
    wait: bool = typer.Option(
        False, "--wait", help="With -q: stream the log and exit with the run's status."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the run record as JSON."),
    remote_queue: str | None = typer.Option(
        None,
        "--remote-queue",
        help="Push to a W&B run queue ENTITY/PROJECT/QUEUE instead (a job -j or an image -d);"
        " offline, the push waits in the outbox for `launchctl sync`.",
    ),
    base_url: str | None = typer.Option(
        None, "--base-url", help="With --remote-queue: the W&B server (default: as `sync`)."
    ),
    delay: str | None = typer.Option(
        None, "--delay", metavar="AGE", help="With -q: claimable only after this long (90s, 2h)."
    ),
    at: str | None = typer.Option(
        None,
        "--at",
        metavar="WHEN",
        help="With -q: claimable only from then: 2026-12-01T02:00 (local) or 02:00 (next).",
    ),
    after: list[str] = typer.Option(
        [], "--after", metavar="RUNS", help="With -q: wait until these runs end (RUN,RUN...)."
    ),
    after_ok: list[str] = typer.Option(
        [], "--after-ok", metavar="RUNS", help="With -q: run only if these runs all finish."
    ),
    after_fail: list[str] = typer.Option(
        [], "--after-fail", metavar="RUNS", help="With -q: run only if one of these runs fails."
    ),
    quiet: bool = typer.Option(
        False, "--quiet", help="With -q: print only the run id (no notes), for scripts."
    ),
    array: str | None = typer.Option(
        None,
        "--array",
        metavar="INDICES",
        help="With -q: queue one run per index, as sbatch --array: 0-15, 1,3,5-7, 0-15:4;"
        " %N: at most N in flight (0-15%4). Prints the array id.",
    ),
) -> None:
    """Launch a run: queue it with -q, or run it now and exit with its status.

    \b
    Examples:
      launchctl launch -u examples/hello -E 'python train.py' --set lr=0.5
      launchctl launch -q default -j hello:latest -P high --set epochs=3
      launchctl launch -q default -u . -E 'python train.py' --wait   # in CI
      launchctl launch -u . -E 'python train.py' --async   # prints the run id, returns
      launchctl launch -q default -u . -E 'python train.py' --array 0-15%4
    """
    from launchctl.launch import LaunchRequest, prepare_spec, submit

    indices = _parse_array(array, queue, remote_queue, run_async=run_async, wait=wait)

    req = LaunchRequest(
        uri=uri,
        job=job,
        entry_point=entry_point,
        docker_image=docker_image,
        queue=queue,
        config=config,
        resource_args=resource_args,
        resource=resource,
        dockerfile=dockerfile,
        priority=priority,
        project=project,
        entity=entity,
        name=name,
        sets=set_,
        args=args,
        set_vars=set_var,
        job_name=job_name,
        git_version=git_version,
        build_context=build_context,
        base_image=base_image,
        delay=delay,
        at=at,
        after=after,
        after_ok=after_ok,
        after_fail=after_fail,
    )
    _check_workflow_flags(req, remote_queue, quiet=quiet, wait=wait, as_json=as_json)
    if run_async and queue is not None:  # as W&B's cli.py launch refuses it
        from launchctl.errors import UsageError

        raise UsageError(
            "cannot use both --async and --queue (-q): a queued run is already asynchronous"
        )
    if remote_queue is not None or base_url is not None:
        _push_remote(req, remote_queue, base_url, run_async=run_async, wait=wait, as_json=as_json)
        return
    notes: list[str] = []  # said once the launch is taken: a refusal stays one line
    spec = prepare_spec(req, say=notes.append)
    if quiet and not spec.get("queue"):
        from launchctl.errors import UsageError

        raise UsageError("--quiet goes with a queued launch (-q): it prints only the run id")
    store = open_store()
    if indices is not None:
        _launch_array(store, spec, indices, notes, quiet=quiet, as_json=as_json)
        return
    if run_async:
        _run_async(store, spec, as_json, notes)
        return
    if spec.get("queue"):
        run = submit(store, spec, say=notes.append)
        if not quiet:
            _say(notes)
        if not wait:
            if as_json:
                emit_json(run)
            else:
                print(run["id"])
                if not quiet:
                    _hint_if_unserved(store, run)
            return
        err(f"queued run {run['id']} on queue {run['queue_name']}")
        _wait_queued(store, run["id"], as_json)
        return
    _run_direct(store, spec, as_json, notes)


def _parse_array(
    text: str | None, queue: str | None, remote_queue: str | None, *, run_async: bool,
    wait: bool,
) -> Any:  # fmt: skip
    """``--array`` (issue 18), parsed and checked against the other flags before anything
    is read or written; None without it."""
    if text is None:
        return None
    from launchctl import arrays
    from launchctl.errors import UsageError

    others = ((remote_queue, "--remote-queue"), (run_async, "--async"), (wait, "--wait"))
    for given, flag in others:
        if given:
            raise UsageError(f"cannot use both --array and {flag}: an array's runs wait in a queue")
    if queue is None:
        raise UsageError("--array needs a queue (-q): its runs wait there for agents")
    return arrays.parse(text)


def _launch_array(
    store: Any, spec: dict[str, Any], indices: Any, notes: list[str], *, quiet: bool,
    as_json: bool,
) -> None:  # fmt: skip
    """``launch -q Q --array 0-15%4``: every run in one transaction. Prints the array id
    (as ``sbatch --parsable`` prints an array's job id); --json prints every run."""
    from launchctl import arrays

    array_id, runs = arrays.submit(store, spec, indices, say=notes.append)
    if not quiet:
        _say(notes)
    if as_json:
        emit_json(runs)
        return
    print(array_id)
    if quiet:
        return
    limit = f", at most {indices.limit} at once" if indices.limit else ""
    err(
        f"queued array {array_id}: {indices.count} runs ({indices.text.partition('%')[0]})"
        f"{limit} on queue {runs[0]['queue_name']};"
        f" `launchctl runs list --array {array_id}` lists them"
    )
    _hint_if_unserved(store, runs[0])


def _push_remote(
    req: Any, target: str | None, base_url: str | None, *, run_async: bool, wait: bool,
    as_json: bool,
) -> None:  # fmt: skip
    """``launch --remote-queue E/P/Q``: the launch spec a local launch would build, pushed to
    a W&B run queue (launchctl.sync.remote_queue.push_launch)."""
    from launchctl.errors import UsageError
    from launchctl.launch import prepare_spec

    if target is None:
        raise UsageError("--base-url goes with --remote-queue (or `launchctl sync`)")
    for given, flag in ((req.queue, "--queue (-q)"), (run_async, "--async"), (wait, "--wait")):
        if given:
            raise UsageError(f"cannot use both --remote-queue and {flag}: pick one")
    from launchctl.sync.remote_queue import parse_remote_queue, push_launch

    parse_remote_queue(target, local_allowed=False)  # a bad name: refused before anything else
    priority, req.priority = req.priority, None  # W&B's priority travels beside the spec
    notes: list[str] = []
    spec = prepare_spec(req, say=notes.append)
    if priority is not None:
        from launchctl.launch import parse_priority
        from launchctl.priority import PRIORITY_NAMES

        spec["priority"] = PRIORITY_NAMES[parse_priority(priority) or 0]
    store = open_store()
    pushed = push_launch(store, target, spec, base_url=base_url)
    _say(notes)
    if as_json:
        emit_json(pushed.as_json())
    elif pushed.item_id is not None:
        print(pushed.item_id)
        err(f"pushed to W&B queue {pushed.remote_queue} on {pushed.base_url}")
    else:
        err(
            f"{pushed.offline}: the push waits in the outbox as #{pushed.outbox_id};"
            " `launchctl sync` (or an agent with --sync) sends it"
        )


def _check_workflow_flags(
    req: Any, remote_queue: str | None, *, quiet: bool, wait: bool, as_json: bool
) -> None:
    """Issue 18: --delay/--at/--after* need a local queue; --quiet is for a queued launch
    that prints its id."""
    from launchctl import workflow
    from launchctl.errors import UsageError

    workflow.check_launch_flags(  # without a queue: refused by prepare_spec
        queued=True,
        remote=remote_queue is not None,
        when=0.0 if (req.delay is not None or req.at is not None) else None,
        after=bool(req.after or req.after_ok or req.after_fail),
    )
    if quiet:
        others = ((wait, "--wait"), (as_json, "--json"), (remote_queue, "--remote-queue"))
        for given, flag in others:
            if given:
                raise UsageError(f"cannot use both --quiet and {flag}: pick one")


def _say(notes: list[str]) -> None:
    for line in notes:
        err(line)


_NO_VALUE = frozenset({"--wait", "--json", "--async", "--quiet", "-h", "--help"})


def bare_queue(argv: list[str]) -> list[str]:
    """``launch``'s arguments with a bare ``-q``/``--queue`` (no value: the end, or another
    option next) given W&B's value, the queue ``default`` (W&B: click's ``flag_value``;
    Typer has no optional values, so the CLI's main rewrites the arguments). A token that
    is another option's value (``--args -q``) is left alone."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        out.append(token)
        i += 1
        if token == "--":
            out.extend(argv[i:])
            break
        if token in ("-q", "--queue"):
            if i >= len(argv) or (argv[i].startswith("-") and argv[i] != "-"):
                out.append("default")
        elif token.startswith("-") and token not in _NO_VALUE and i < len(argv):
            attached = "=" in token if token.startswith("--") else len(token) > 2
            if not attached:  # the next token is this option's value
                out.append(argv[i])
                i += 1
    return out


def _hint_if_unserved(store: Any, run: dict[str, Any]) -> None:
    from launchctl.runs import serving_agents

    if not serving_agents(store, run["queue_name"]):
        err(
            f"no agent is serving queue {run['queue_name']}; start one with"
            f" `launchctl agent -q {run['queue_name']}`"
        )


def _write_to(stream: Any) -> Any:
    def write(chunk: bytes) -> None:
        stream.buffer.write(chunk)
        stream.buffer.flush()

    return write


def _finish(run: dict[str, Any], as_json: bool) -> None:
    from launchctl.follow import exit_status

    if as_json:
        emit_json(run)
    detail = f"exit code {run['exit_code']}" if run["exit_code"] is not None else ""
    if run["state"] == "failed" and run["reason"]:
        detail = f"stage {run['stage'] or '?'}: {run['reason']}"
    elif run["state"] == "stopped" and run["reason"]:
        detail = run["reason"]
    err(f"run {run['id']} {run['state']}" + (f" ({detail})" if detail else ""))
    raise typer.Exit(exit_status(run))


def _wait_queued(store: Any, run_id: str, as_json: bool) -> None:
    from launchctl.follow import follow

    _stop_waiting_on_signals()
    try:
        run = follow(
            store,
            run_id,
            _write_to(sys.stderr if as_json else sys.stdout),
            on_wait=lambda r: _hint_if_unserved(store, r),
            on_lost=err,
        )
    except _StoppedWaiting:
        err(f"stopped waiting; run {run_id} goes on (`launchctl runs cancel {run_id}` ends it)")
        raise typer.Exit(130) from None
    _finish(run, as_json)


class _StoppedWaiting(BaseException):
    """Ctrl-C (or SIGTERM) while a launch waits for its run: the run goes on. A
    BaseException, as KeyboardInterrupt is, so no ``except Exception`` on the way swallows it."""


def _stop_waiting_on_signals() -> None:
    """The first SIGINT or SIGTERM stops the wait; later ones are ignored while it says so.

    The handler writes nothing: the caller says why, outside it (a handler that writes to
    stderr while the main thread is writing there can fail with "reentrant call").
    """

    def stop_waiting(_sig: int, _frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise _StoppedWaiting

    signal.signal(signal.SIGINT, stop_waiting)
    signal.signal(signal.SIGTERM, stop_waiting)


def _run_async(store: Any, spec: dict[str, Any], as_json: bool, notes: list[str]) -> None:
    """W&B's ``launch --async``: a direct launch that does not wait for the run to end
    (launchctl.launch.start_detached). Waits until the run has started, prints its id and
    exits 0; a run that ended before that exits with its status, as a direct launch does."""
    from launchctl.launch import start_detached, wait_started

    run, child = start_detached(store, spec)
    _say(notes)
    if not as_json:
        err(f"starting {run['id']} ({run['name']}) in the background")

    _stop_waiting_on_signals()
    try:
        now = wait_started(store, run, child)
    except _StoppedWaiting:
        err(f"stopped waiting; run {run['id']} goes on (`launchctl logs {run['id']}`)")
        raise typer.Exit(130) from None
    if now["state"] != "running":  # it ended already
        if not as_json:
            print(now["id"], flush=True)
        _finish(now, as_json)
    if as_json:
        emit_json(now)
    else:
        print(now["id"])
        err(f"run {now['id']} is running; `launchctl logs -f {now['id']}` follows it")


def _run_direct(store: Any, spec: dict[str, Any], as_json: bool, notes: list[str]) -> None:
    """W&B's direct launch: an embedded agent runs this one run in the foreground."""
    from launchctl.agent import Agent, AgentOptions
    from launchctl.follow import follow
    from launchctl.launch import submit

    agent = Agent(store, [], AgentOptions(max_jobs=1), say=lambda _line: None)
    run = submit(store, spec, claim_for=agent.id, lease_s=agent.options.lease_s)
    _say(notes)
    agent.start()
    if not as_json:
        err(f"running {run['id']} ({run['name']}) directly; Ctrl-C stops it")
    agent.start_claimed(run)
    loop = threading.Thread(target=agent.run, kwargs={"burst": True}, daemon=True)
    loop.start()
    agent.handle_signals(agent.interrupt)
    # The agent thread has its own connection; the follower reads through another one.
    from launchctl.service import another_connection

    final = follow(
        another_connection(store), run["id"], _write_to(sys.stderr if as_json else sys.stdout)
    )
    loop.join(timeout=30)
    _finish(final, as_json)


if __name__ == "__main__":  # the detached agent of `launch --async`
    from launchctl.launch import serve_detached

    serve_detached(open_store(), sys.argv[1], sys.argv[2])
