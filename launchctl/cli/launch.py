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
    job: str | None = typer.Option(None, "--job", "-j", help="A job: NAME[:ALIAS]."),
    entry_point: str | None = typer.Option(
        None, "--entry-point", "-E", help="Command to run, e.g. 'python train.py'."
    ),
    docker_image: str | None = typer.Option(
        None, "--docker-image", "-d", help="Run this prebuilt image."
    ),
    queue: str | None = typer.Option(
        None, "--queue", "-q", help="Queue the run instead of running it now."
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
    name: str | None = typer.Option(None, "--name", help="Run name."),
    set_: list[str] = typer.Option(
        [], "--set", help="run_config override key=value; JSON values are typed (repeatable)."
    ),
    args: str | None = typer.Option(None, "--args", help="Arguments appended to the entry point."),
    wait: bool = typer.Option(
        False, "--wait", help="With -q: stream the log and exit with the run's status."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the run record as JSON."),
) -> None:
    """Launch a run: queue it with -q, or run it now and exit with its status.

    \b
    Examples:
      launchctl launch -u examples/hello -E 'python train.py' --set lr=0.5
      launchctl launch -q default -j hello:latest -P high --set epochs=3
      launchctl launch -q default -u . -E 'python train.py' --wait   # in CI
    """
    from launchctl.launch import LaunchRequest, prepare_spec, submit

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
    )
    spec = prepare_spec(req)
    store = open_store()
    if spec.get("queue"):
        run = submit(store, spec)
        if not wait:
            if as_json:
                emit_json(run)
            else:
                print(run["id"])
                _hint_if_unserved(store, run)
            return
        err(f"queued run {run['id']} on queue {run['queue_name']}")
        _wait_queued(store, run["id"], as_json)
        return
    _run_direct(store, spec, as_json)


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

    def stop_waiting(_sig: int, _frame: Any) -> None:
        err(
            f"stopped waiting; run {run_id} goes on (cancel it with"
            f" `launchctl runs cancel {run_id}`)"
        )
        raise typer.Exit(130)

    signal.signal(signal.SIGINT, stop_waiting)
    signal.signal(signal.SIGTERM, stop_waiting)
    run = follow(
        store,
        run_id,
        _write_to(sys.stderr if as_json else sys.stdout),
        on_wait=lambda r: _hint_if_unserved(store, r),
    )
    _finish(run, as_json)


def _run_direct(store: Any, spec: dict[str, Any], as_json: bool) -> None:
    """W&B's direct launch: an embedded agent runs this one run in the foreground."""
    from launchctl.agent import Agent, AgentOptions
    from launchctl.follow import follow
    from launchctl.launch import submit

    agent = Agent(store, [], AgentOptions(max_jobs=1), say=lambda _line: None)
    run = submit(store, spec, claim_for=agent.id, lease_s=agent.options.lease_s)
    agent.start()
    if not as_json:
        err(f"running {run['id']} ({run['name']}) directly; Ctrl-C stops it")
    agent.start_claimed(run)
    loop = threading.Thread(target=agent.run, kwargs={"burst": True}, daemon=True)
    loop.start()
    interrupts = 0

    def on_signal(_sig: int, _frame: Any) -> None:
        nonlocal interrupts
        interrupts += 1
        agent.stop_all("interrupted" if interrupts == 1 else "killed")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    # The agent thread has its own connection; the follower reads through another one.
    from launchctl.service import another_connection

    final = follow(
        another_connection(store), run["id"], _write_to(sys.stderr if as_json else sys.stdout)
    )
    loop.join(timeout=30)
    _finish(final, as_json)
