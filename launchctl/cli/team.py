"""`launchctl team ...`: entities (teams), their admins and members."""

from __future__ import annotations

import typer

from launchctl.cli.common import JSON_OPTION, open_store
from launchctl.cli.output import emit_json, table, when

app = typer.Typer(
    help="Create teams (entities) and manage who administers them and who may launch.\n\n"
    "Admins create, edit and delete an entity's queues; members launch into them.\n\n"
    "\b\nExample:\n  launchctl team create vision\n  launchctl team add vision bob",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command("create")
def create(
    name: str = typer.Argument(..., help="Entity (team) name."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create an entity; you become its admin.

    \b
    Example:
      launchctl team create vision
    """
    from launchctl import teams

    row = teams.create(open_store(), name)
    if as_json:
        emit_json(row)
    else:
        print(f"created entity {row['name']}; you are its admin")


@app.command("add")
def add(
    name: str = typer.Argument(..., help="Entity (team) name."),
    user: str = typer.Argument(..., help="User to add (an OS user name or a LAUNCHCTL_USER)."),
    admin: bool = typer.Option(
        False, "--admin", help="Make the user an admin, who may edit the entity's queues."
    ),
) -> None:
    """Add a user to an entity, or change their role. Only its admins may.

    Without --admin the user is a member, who may launch into the entity's queues.

    \b
    Example:
      launchctl team add vision bob
      launchctl team add vision alice --admin
    """
    from launchctl import teams

    role = "an admin" if admin else "a member"
    old = teams.add(open_store(), name, user, admin=admin)
    if old is None:
        print(f"added {user} to {name} as {role}")
    elif old == ("admin" if admin else "member"):
        print(f"{user} is already {role} of {name}")
    else:
        print(f"{user} is now {role} of {name} (was {old})")


@app.command("remove")
def remove(
    name: str = typer.Argument(..., help="Entity (team) name."),
    user: str = typer.Argument(..., help="User to remove."),
) -> None:
    """Remove a user from an entity. Only its admins may; the last admin stays.

    \b
    Example:
      launchctl team remove vision bob
    """
    from launchctl import teams

    old = teams.remove(open_store(), name, user)
    print(f"removed {user} ({old}) from {name}")


@app.command("list")
def list_(as_json: bool = JSON_OPTION) -> None:
    """List entities with your role in each and their member and queue counts.

    \b
    Example:
      launchctl team list --json
    """
    from launchctl import teams

    rows = teams.listing(open_store())
    if as_json:
        emit_json(rows)
        return
    table(
        (
            [r["name"], r["role"], r["member_count"], r["admin_count"], r["queue_count"]]
            for r in rows
        ),
        ["entity", "your role", "members", "admins", "queues"],
    )


@app.command("show")
def show(
    name: str = typer.Argument(..., help="Entity (team) name."), as_json: bool = JSON_OPTION
) -> None:
    """Show one entity: its members and their roles.

    \b
    Example:
      launchctl team show vision
    """
    from launchctl import teams

    row = teams.show(open_store(), name)
    if as_json:
        emit_json(row)
        return
    print(f"entity:    {row['name']}")
    print(f"your role: {row['role'] or '-'}")
    print(f"created:   {when(row['created_at'])}")
    print(f"queues:    {row['queue_count']}")
    table(
        ([m["user"], m["role"], when(m["added_at"])] for m in row["members"]),
        ["user", "role", "added"],
    )
