"""`launchctl runs hold` and `runs release` (issue 18): keep a queued run from being claimed."""

from __future__ import annotations

import typer

from launchctl.cli.common import open_store


def _hold(run_id: str, held: bool) -> None:
    from launchctl import workflow

    run, changed = workflow.hold(open_store(), run_id, held)
    verb = "held" if held else "released"
    if changed:
        print(f"run {run['id']} {verb}")
    else:
        print(f"run {run['id']} is already {verb if held else 'not held'}")


def hold(run_id: str = typer.Argument(..., help="Run id (a unique prefix is enough).")) -> None:
    """Keep a queued run from being claimed until `runs release`.

    Only the run's author, or an admin of its entity (or of its queue's), may hold it; a
    run an agent has claimed already is refused.

    \b
    Example:
      launchctl runs hold 3kx9q2ab
    """
    _hold(run_id, True)


def release(run_id: str = typer.Argument(..., help="Run id (a unique prefix is enough).")) -> None:
    """Let a held run be claimed again (where it stood in its queue).

    \b
    Example:
      launchctl runs release 3kx9q2ab
    """
    _hold(run_id, False)


def register(app: typer.Typer) -> None:
    app.command("hold")(hold)
    app.command("release")(release)
