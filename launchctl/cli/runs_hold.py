"""`launchctl runs hold` and `runs release` (issue 18): keep a queued run from being claimed."""

from __future__ import annotations

import typer

from launchctl.cli.common import open_store
from launchctl.cli.output import clean, err

ARRAY_HELP = "Every queued run of this array instead (as scontrol hold of an array job)."


def _hold(run_id: str | None, array: str | None, held: bool) -> None:
    from launchctl import workflow
    from launchctl.errors import UsageError

    if array is not None:
        if run_id is not None:
            raise UsageError("pass a run id or --array, not both")
        _hold_array(array, held)
        return
    if run_id is None:
        raise UsageError(f"pass a run id to {'hold' if held else 'release'}, or --array ARRAY")
    run, changed = workflow.hold(open_store(), run_id, held)
    verb = "held" if held else "released"
    if changed:
        print(f"run {run['id']} {verb}")
    else:
        print(f"run {run['id']} is already {verb if held else 'not held'}")


def _hold_array(given: str, held: bool) -> None:
    """``--array``: one line per run changed, one per refusal on stderr (exit 1 if any)."""
    from launchctl import arrays

    arrays.check_id(given)  # before the store is opened
    done = arrays.hold(open_store(), given, held)
    verb = "held" if held else "released"
    for run in done.changed:
        print(f"run {run['id']} {verb}")
    for _run, why in done.refused:
        err(clean(why))
    if not done.changed and not done.refused:
        state = "held" if held else "not held"
        more = f" ({len(done.unchanged)} already {state})" if done.unchanged else ""
        print(f"array {done.array_id}: no queued run to {'hold' if held else 'release'}{more}")
    if done.refused:
        raise typer.Exit(1)


def hold(
    run_id: str | None = typer.Argument(None, help="Run id (a unique prefix is enough)."),
    array: str | None = typer.Option(None, "--array", metavar="ARRAY", help=ARRAY_HELP),
) -> None:
    """Keep a queued run from being claimed until `runs release`.

    Only the run's author, or an admin of its entity (or of its queue's), may hold it; a
    run an agent has claimed already is refused. --array holds every queued run of an
    array (its running ones go on).

    \b
    Example:
      launchctl runs hold 3kx9q2ab
      launchctl runs hold --array a-3kx9q2ab
    """
    _hold(run_id, array, True)


def release(
    run_id: str | None = typer.Argument(None, help="Run id (a unique prefix is enough)."),
    array: str | None = typer.Option(None, "--array", metavar="ARRAY", help=ARRAY_HELP),
) -> None:
    """Let a held run be claimed again (where it stood in its queue).

    \b
    Example:
      launchctl runs release 3kx9q2ab
      launchctl runs release --array a-3kx9q2ab
    """
    _hold(run_id, array, False)


def register(app: typer.Typer) -> None:
    app.command("hold")(hold)
    app.command("release")(release)
