"""`launchctl launch-sweep` and `launchctl sweep ...`: W&B sweeps on a queue (issue 15)."""

from __future__ import annotations

from typing import Any

import typer

from launchctl.cli import sweep_run, sweep_show
from launchctl.cli.common import JSON_OPTION, open_store
from launchctl.cli.output import emit_json, err, table, when

app = typer.Typer(
    help="Hyperparameter sweeps on a queue, from W&B sweep configs.\n\n"
    "Trials run num_workers at a time through an agent serving the queue.\n\n"
    "\b\nExample:\n  launchctl sweep create sweep.yaml -q gpu\n  launchctl sweep list",
    no_args_is_help=True,
    rich_markup_mode=None,
)

_ID = typer.Argument(..., help="Sweep id (a unique prefix is enough).")


def _for_json(row: dict[str, Any]) -> dict[str, Any]:
    from launchctl.runs import iso

    out = {k: v for k, v in row.items() if k not in ("scheduler_agent", "scheduler_lease")}
    for key in ("created_at", "updated_at", "ended_at"):
        out[key] = iso(row.get(key))
    return out


def launch_sweep(
    config: str | None = typer.Argument(
        None, help="W&B sweep config: a YAML or JSON file.", show_default=False
    ),
    queue: str | None = typer.Option(
        None, "--queue", "-q", help="Queue the trials run on (else the config's launch.queue)."
    ),
    project: str | None = typer.Option(None, "--project", "-p", help="Project of the trials."),
    entity: str | None = typer.Option(
        None, "--entity", "-e", help="Entity of the trials (default: the queue's)."
    ),
    resume_id: str | None = typer.Option(
        None, "--resume-id", "--resume_id", "-r", help="Set a paused or stopped sweep going again."
    ),
    prior_runs: list[str] = typer.Option(
        [], "--prior-run", "--prior_run", "-R", help="W&B's: add a run to the sweep (refused)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the sweep as JSON."),
) -> None:
    """Create a sweep on a queue from a W&B sweep config.

    The config is W&B's: job (or image_uri), method (grid, random, bayes), metric,
    parameters, run_cap, early_terminate, command, and the scheduler block
    (num_workers: how many trials at once, default 8) and launch block. An agent
    serving the queue keeps num_workers trials queued or running.

    \b
    Examples:
      launchctl launch-sweep sweep.yaml -q gpu
      launchctl launch-sweep sweep.yaml -q gpu -p mnist -e vision
      launchctl launch-sweep --resume-id 1a2b3c4d
    """
    from launchctl.sweeps import manage

    if prior_runs:  # W&B's prior runs are runs on a W&B server, found by their W&B ids
        from launchctl.errors import UsageError

        raise UsageError(
            "--prior-run (-R) is not supported: launchctl's sweeps count only their own trials"
        )
    store = open_store()
    created = manage.create(
        store, config, queue=queue, project=project, entity=entity, resume_id=resume_id
    )
    row = created.sweep
    for line in created.notes:
        err(line)
    if as_json:
        emit_json(_for_json(row))
        return
    print(row["id"])
    verb = "resumed" if created.resumed else "created"
    cap = f", run_cap {row['run_cap']}" if row["run_cap"] else ""
    err(
        f"{verb} sweep {row['id']} ({row['method']}{cap}) on queue {row['queue_name']}:"
        f" up to {row['num_workers']} trials at a time"
    )
    from launchctl.runs import serving_agents

    if not serving_agents(store, row["queue_name"]):
        err(
            f"no agent is serving queue {row['queue_name']}; start one with"
            f" `launchctl agent -q {row['queue_name']}` to run its trials"
        )


app.command("create", no_args_is_help=True)(launch_sweep)


@app.command("list")
def list_(
    state: list[str] = typer.Option(
        [], "--state", "-s", help="Only sweeps in this state (repeatable)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """List sweeps, newest first, with their state and trial counts.

    \b
    Example:
      launchctl sweep list --state running
    """
    from launchctl.errors import UsageError
    from launchctl.sweeps import manage

    for name in state:
        if name not in manage.STATES:
            raise UsageError(f"unknown sweep state {name!r} (one of: {', '.join(manage.STATES)})")
    rows = manage.listing(open_store(), tuple(state))
    if as_json:
        emit_json([_for_json(r) for r in rows])
        return
    table(
        (
            [
                r["id"],
                r["state"],
                r["method"],
                r["queue_name"],
                _metric(r),
                f"{r['trials']}/{r['run_cap']}" if r["run_cap"] else str(r["trials"]),
                r["num_workers"],
                r["author"],
                when(r["created_at"]),
            ]
            for r in rows
        ),
        ["id", "state", "method", "queue", "metric", "trials", "workers", "author", "created"],
    )


def _metric(row: dict[str, Any]) -> str:
    if not row["metric_name"]:
        return "-"
    arrow = "max" if row["metric_goal"] == "maximize" else "min"
    return f"{row['metric_name']} ({arrow})"


app.command("show", no_args_is_help=True)(sweep_show.show)
app.command(
    "run", no_args_is_help=True, short_help="Schedule a sweep in the foreground until it is done."
)(sweep_run.run)


@app.command("pause")
def pause(sweep_id: str = _ID) -> None:
    """Pause a sweep: no new trials until resumed; running ones go on.

    \b
    Example:
      launchctl sweep pause 1a2b3c4d
    """
    from launchctl.sweeps import manage

    row = manage.pause(open_store(), sweep_id)
    print(f"paused sweep {row['id']}")


@app.command("resume")
def resume(sweep_id: str = _ID) -> None:
    """Resume a paused sweep.

    \b
    Example:
      launchctl sweep resume 1a2b3c4d
    """
    from launchctl.sweeps import manage

    row = manage.resume(open_store(), sweep_id)
    print(f"resumed sweep {row['id']}")


@app.command("stop")
def stop(sweep_id: str = _ID) -> None:
    """Stop a sweep: no new trials; the running ones finish.

    \b
    Example:
      launchctl sweep stop 1a2b3c4d
    """
    from launchctl.sweeps import manage

    row = manage.stop(open_store(), sweep_id)
    print(f"stopped sweep {row['id']}; its running trials finish")


@app.command("cancel")
def cancel(sweep_id: str = _ID) -> None:
    """Cancel a sweep and its queued and running trials.

    \b
    Example:
      launchctl sweep cancel 1a2b3c4d
    """
    from launchctl.sweeps import manage

    row = manage.cancel(open_store(), sweep_id)
    n = len(row["cancelled_runs"])
    print(f"cancelled sweep {row['id']} and {n} of its run{'s' if n != 1 else ''}")
