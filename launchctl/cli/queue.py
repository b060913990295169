"""`launchctl queue ...`: create, inspect, edit, pause and delete queues."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from launchctl.cli.common import JSON_OPTION, open_store
from launchctl.cli.output import emit_json, line, table, when

app = typer.Typer(
    help="Create and manage queues.\n\n\b\nExample:\n"
    "  launchctl queue create gpu --resource local-process",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _masked(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with its config's credentials in plain text (an old store's) shown as ***.
    Its text as written needs none: a config holding one in plain text is refused when
    written, and stores from before that rule kept no text."""
    from launchctl.buildconfig import masked

    return {**row, "config": masked(row.get("config"))}


def _load(config: str | None) -> tuple[dict | None, str | None]:
    """The config (``--config``: a file or inline text) and its text as written."""
    if config is None:
        return None, None
    from launchctl.configfile import load_mapping

    data = load_mapping(config, "queue config (--config)")
    return data, _text(config)


def _text(value: str) -> str:
    """``--config``'s text: the file's (load_mapping has just read it), or the value."""
    from launchctl.paths import user_path

    try:
        path = user_path(value)
        if len(value) < 4096 and path.is_file():
            return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        pass
    return value


@app.command("create")
def create(
    name: str = typer.Argument(..., help="Queue name."),
    resource: str = typer.Option(
        "local-process",
        "--resource",
        "-r",
        help="The resource type its runs run on: local-process or local-container"
        " (kubernetes and slurm are not in this build).",
    ),
    config: str | None = typer.Option(
        None,
        "--config",
        "-c",
        help="Queue config: a JSON/YAML file or JSON string; the resource's options alone"
        " (as W&B's queue editor holds them) or wrapped in resource_args.",
    ),
    entity: str | None = typer.Option(None, "--entity", "-e", help="Owning entity (team)."),
    description: str | None = typer.Option(None, "--description", help="What the queue is for."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create a queue.

    \b
    Examples:
      launchctl queue create cpu --resource local-process \\
          --config '{"resource_args": {"local-process": {"env": {"OMP_NUM_THREADS": "2"}}}}'
      launchctl queue create gpu -r local-container -c '{"env": ["HF_TOKEN"], "gpus": "all"}'
    """
    from launchctl import queues

    data, written = _load(config)
    row = queues.create(
        open_store(),
        name,
        resource=resource,
        config=data,
        entity=entity,
        description=description,
        written=written,
    )
    if as_json:
        emit_json(_masked(row))
    else:
        print(f"created queue {row['name']} ({row['resource']})")


@app.command("list")
def list_(as_json: bool = JSON_OPTION) -> None:
    """List queues with their waiting and active runs.

    \b
    Example:
      launchctl queue list --json
    """
    from launchctl import queues

    rows = [_masked(r) for r in queues.listing(open_store())]
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
def show(name: str = typer.Argument(..., help="Queue name."), as_json: bool = JSON_OPTION) -> None:
    """Show one queue: its config and run counts.

    \b
    Example:
      launchctl queue show default
    """
    from launchctl import queues

    row = _masked(queues.show(open_store(), name))
    if as_json:
        emit_json(row)
        return
    import json

    line(f"queue:       {row['name']}")
    line(f"resource:    {row['resource']}")
    line(f"entity:      {row['entity']}")
    line(f"status:      {'paused' if row['paused'] else 'active'}")
    line(f"description: {row['description'] or '-'}")
    line(f"created:     {when(row['created_at'])}")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(row["runs"].items())) or "none"
    line(f"runs:        {counts}")
    limits = row["config"].get("limits") if isinstance(row["config"], dict) else None
    per_user = limits.get("per_user") if isinstance(limits, dict) else None
    if per_user is not None:  # issue 18: a queue's limits.per_user (launchctl.limits)
        most = f"each launcher holds at most {per_user} of its slots"
        line(f"limits:      per_user {per_user} ({most})")
    written = row.get("config_written")
    if written is not None:
        line("config (as written):")
        print(written.rstrip("\n"))
    line("config (as runs read it):" if written is not None else "config:")
    print(json.dumps(row["config"], indent=2, sort_keys=True))
    origins = row.get("template_origins") or {}
    if origins:
        line("template definitions (where each came from):")
        width = max(len(n) for n in origins)
        for field, origin in origins.items():
            line(f"  {field:<{width}}  {_ORIGIN_SHOWN.get(origin, origin)}")
    for note in row.get("notes") or ():
        line(f"note: {note}")


_ORIGIN_SHOWN = {
    "config": "the config (queue create/edit --config)",
    "queue template set": "queue template set",
}


@app.command("edit")
def edit(
    name: str = typer.Argument(..., help="Queue name."),
    config: str | None = typer.Option(
        None,
        "--config",
        "-c",
        help="New queue config: a JSON/YAML file or JSON string, in either shape.",
    ),
    description: str | None = typer.Option(
        None, "--description", help="New description of the queue."
    ),
) -> None:
    """Replace a queue's config (validated before it is written). Template definitions
    made with `queue template set` stay unless the new config defines the same field.

    \b
    Example:
      launchctl queue edit cpu --config queue.yaml
    """
    import sys

    from launchctl import queues

    data, written = _load(config)
    row = queues.edit(
        open_store(),
        name,
        config=data,
        description=description,
        written=written,
        say=lambda text: print(text, file=sys.stderr),
    )
    print(f"updated queue {row['name']}")


@app.command("pause")
def pause(name: str = typer.Argument(..., help="Queue name.")) -> None:
    """Stop agents from claiming this queue's runs (running runs go on).

    \b
    Example:
      launchctl queue pause default
    """
    from launchctl import queues

    queues.set_paused(open_store(), name, True)
    print(f"paused queue {name}")


@app.command("resume")
def resume(name: str = typer.Argument(..., help="Queue name.")) -> None:
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
    name: str = typer.Argument(..., help="Queue name."),
    force: bool = typer.Option(
        False, "--force", help="Delete even with queued or running runs: stop them all."
    ),
) -> None:
    """Delete a queue. Refused while it has queued or running runs, unless --force.

    \b
    Example:
      launchctl queue delete scratch --force
    """
    from launchctl import queues

    result = queues.delete(open_store(), name, force=force)
    extra = ""
    if result["stopped"] or result["cancel_requested"]:
        extra = (
            f" ({result['stopped']} queued runs stopped,"
            f" {result['cancel_requested']} running runs asked to stop)"
        )
    print(f"deleted queue {name}{extra}")


class _TemplateGroup(TyperGroup):
    """`queue template NAME` shows a queue's fields; `set` and `unset` change definitions."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["show", *args]
        return super().resolve_command(ctx, args)


template_app = typer.Typer(
    cls=_TemplateGroup,
    help="Queue config templates: the {{fields}} a config uses and their definitions.\n\n"
    "\b\nExamples:\n  launchctl queue template gpu\n"
    "  launchctl queue template set gpu gpus --type integer --min 1 --max 4 --default 1",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(template_app, name="template")


@template_app.command("show")
def template_show(
    name: str = typer.Argument(..., help="Queue name."), as_json: bool = JSON_OPTION
) -> None:
    """List the template fields a queue's config uses, with their definitions.

    \b
    Example:
      launchctl queue template gpu
    """
    from launchctl import queues

    rows = queues.template_fields(open_store(), name)
    if as_json:
        emit_json(rows)
        return
    table(
        (
            [r["name"], r.get("type", "(undefined)"), r.get("minimum"), r.get("maximum"),
             ",".join(str(o) for o in r["enum"]) if "enum" in r else None, r.get("default"),
             "yes" if r["used"] else "no", r.get("description") or ""]
            for r in rows
        ),
        ["field", "type", "min", "max", "options", "default", "used", "description"],
    )  # fmt: skip


def _number(value: str | None, option: str) -> float | int | None:
    if value is None:
        return None
    from launchctl.errors import UsageError

    try:
        return int(value) if value.lstrip("+-").isdigit() else float(value)
    except ValueError:
        raise UsageError(f"{option} must be a number, got {value!r}") from None


@template_app.command("set")
def template_set(
    queue: str = typer.Argument(..., help="Queue name."),
    variable: str | None = typer.Argument(None, help="Template variable (omit with --file)."),
    type_: str | None = typer.Option(None, "--type", help="string, integer or number."),
    minimum: str | None = typer.Option(None, "--min", help="Smallest value allowed."),
    maximum: str | None = typer.Option(None, "--max", help="Largest value allowed."),
    default: str | None = typer.Option(None, "--default", help="Value when the launch sets none."),
    options: str | None = typer.Option(None, "--options", help="Allowed values: a,b,c."),
    description: str | None = typer.Option(None, "--description", help="Shown to members."),
    file: str | None = typer.Option(
        None, "--file", "-f", help="JSON-Schema definitions (JSON/YAML): {var: {type, ...}}."
    ),
) -> None:
    """Define a template variable (type, limits, options, default), as W&B's queue UI does.

    \b
    Examples:
      launchctl queue template set gpu gpus --type integer --min 1 --max 4 --default 1
      launchctl queue template set gpu size --type string --options small,large
      launchctl queue template set gpu --file variables.yaml
    """
    from launchctl import queues
    from launchctl.errors import UsageError

    if file is not None:
        from launchctl.configfile import load_mapping

        loaded = load_mapping(file, "template definitions (--file)")
        definitions = {variable: loaded} if variable else loaded
    else:
        if variable is None or type_ is None:
            raise UsageError("give VARIABLE and --type (or --file with definitions)")
        schema: dict[str, Any] = {"type": type_}
        if minimum is not None:
            schema["minimum"] = _number(minimum, "--min")
        if maximum is not None:
            schema["maximum"] = _number(maximum, "--max")
        if options is not None:
            schema["enum"] = [o.strip() for o in options.split(",") if o.strip()]
        if default is not None:
            schema["default"] = default
        if description is not None:
            schema["description"] = description
        definitions = {variable: schema}
    queues.set_template(open_store(), queue, definitions)
    print(f"queue {queue}: defined {', '.join(definitions)}")


@template_app.command("unset")
def template_unset(
    queue: str = typer.Argument(..., help="Queue name."),
    variable: str = typer.Argument(..., help="Template variable."),
) -> None:
    """Remove a template variable's definition (refused while the config still uses it).

    \b
    Example:
      launchctl queue template unset gpu size
    """
    from launchctl import queues

    queues.unset_template(open_store(), queue, variable)
    print(f"queue {queue}: removed {variable}")


@app.command("render")
def render(
    name: str = typer.Argument(..., help="Queue name."),
    set_var: list[str] = typer.Option(
        [], "--set-var", "-v", help="Template variable: name=value (repeatable)."
    ),
) -> None:
    """Print the queue config a run would get: a dry run of templates and macros.

    \b
    Example:
      launchctl queue render gpu --set-var gpus=2
    """
    from launchctl import queues
    from launchctl.launch import parse_set

    result = queues.render(open_store(), name, parse_set(set_var, "--set-var"))
    emit_json(_masked(result))
