"""`launchctl queue ...`: create, inspect, edit, pause and delete queues."""

from __future__ import annotations

import typer

from launchctl.cli.common import JSON_OPTION, open_store
from launchctl.cli.output import emit_json, table, when

app = typer.Typer(
    help="Create and manage queues.\n\n\b\nExample:\n"
    "  launchctl queue create gpu --resource local-process",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _load(config: str | None) -> dict | None:
    if config is None:
        return None
    from launchctl.configfile import load_mapping

    return load_mapping(config, "queue config (--config)")


@app.command("create")
def create(
    name: str = typer.Argument(..., help="Queue name."),
    resource: str = typer.Option(
        "local-process",
        "--resource",
        "-r",
        help="local-process, local-container, kubernetes or slurm.",
    ),
    config: str | None = typer.Option(
        None, "--config", "-c", help="Queue config: a JSON/YAML file or JSON string."
    ),
    entity: str | None = typer.Option(None, "--entity", "-e", help="Owning entity (team)."),
    description: str | None = typer.Option(None, "--description", help="What the queue is for."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create a queue.

    \b
    Example:
      launchctl queue create cpu --resource local-process \\
          --config '{"resource_args": {"local-process": {"env": {"OMP_NUM_THREADS": "2"}}}}'
    """
    from launchctl import queues

    row = queues.create(
        open_store(),
        name,
        resource=resource,
        config=_load(config),
        entity=entity,
        description=description,
    )
    if as_json:
        emit_json(row)
    else:
        print(f"created queue {row['name']} ({row['resource']})")


@app.command("list")
def list_(as_json: bool = JSON_OPTION) -> None:
    """List queues with their waiting and active runs.

    \b
    Example:
      launchctl queue list --json
    """
    rows = open_store().queues.all()
    if as_json:
        emit_json(rows)
        return
    table(
        (
            [
                r["name"],
                r["resource"],
                r["entity"],
                "paused" if r["paused"] else "active",
                r["queued"],
                r["active"],
                r["description"] or "",
            ]
            for r in rows
        ),
        ["name", "resource", "entity", "status", "queued", "running", "description"],
    )


@app.command("show")
def show(name: str = typer.Argument(...), as_json: bool = JSON_OPTION) -> None:
    """Show one queue: its config and run counts.

    \b
    Example:
      launchctl queue show default
    """
    store = open_store()
    row = store.queues.get(name)
    row["runs"] = store.queues.counts(row["id"])
    if as_json:
        emit_json(row)
        return
    import json

    print(f"queue:       {row['name']}")
    print(f"resource:    {row['resource']}")
    print(f"entity:      {row['entity']}")
    print(f"status:      {'paused' if row['paused'] else 'active'}")
    print(f"description: {row['description'] or '-'}")
    print(f"created:     {when(row['created_at'])}")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(row["runs"].items())) or "none"
    print(f"runs:        {counts}")
    print("config:")
    print(json.dumps(row["config"], indent=2, sort_keys=True))


@app.command("edit")
def edit(
    name: str = typer.Argument(...),
    config: str | None = typer.Option(
        None, "--config", "-c", help="New queue config: a JSON/YAML file or JSON string."
    ),
    description: str | None = typer.Option(None, "--description"),
) -> None:
    """Replace a queue's config (validated before it is written).

    \b
    Example:
      launchctl queue edit cpu --config queue.yaml
    """
    from launchctl import queues

    row = queues.edit(open_store(), name, config=_load(config), description=description)
    print(f"updated queue {row['name']}")


@app.command("pause")
def pause(name: str = typer.Argument(...)) -> None:
    """Stop agents from claiming this queue's runs (running runs go on).

    \b
    Example:
      launchctl queue pause default
    """
    from launchctl import queues

    queues.set_paused(open_store(), name, True)
    print(f"paused queue {name}")


@app.command("resume")
def resume(name: str = typer.Argument(...)) -> None:
    """Let agents claim this queue's runs again.

    \b
    Example:
      launchctl queue resume default
    """
    from launchctl import queues

    queues.set_paused(open_store(), name, False)
    print(f"resumed queue {name}")


@app.command("delete")
def delete(
    name: str = typer.Argument(...),
    force: bool = typer.Option(
        False, "--force", help="Delete even with queued or running runs: stop them all."
    ),
) -> None:
    """Delete a queue. Refused while it has queued or running runs, unless --force.

    \b
    Example:
      launchctl queue delete scratch --force
    """
    result = open_store().queues.delete(name, force=force)
    extra = ""
    if result["stopped"] or result["cancel_requested"]:
        extra = (
            f" ({result['stopped']} queued runs stopped,"
            f" {result['cancel_requested']} running runs asked to stop)"
        )
    print(f"deleted queue {name}{extra}")
