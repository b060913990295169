"""The command line: thin Typer commands over the core API, one module per noun.

Errors a user caused (``LaunchctlError``) become one line on stderr and exit 1
(2 for usage errors); nothing here prints a traceback unless LAUNCHCTL_DEBUG is set.
"""

from __future__ import annotations

import os
import sys

import typer

from launchctl import __version__, paths
from launchctl.cli import agent as agent_cmd
from launchctl.cli import gpus as gpus_cmd
from launchctl.cli import job as job_cmd
from launchctl.cli import launch as launch_cmd
from launchctl.cli import queue as queue_cmd
from launchctl.cli import runs as runs_cmd
from launchctl.cli import secret as secret_cmd
from launchctl.cli import team as team_cmd
from launchctl.errors import LaunchctlError

app = typer.Typer(
    name="launchctl",
    help="A local-first job launcher for ML work: W&B Launch's jobs, queues and agents,"
    " in one CLI and one SQLite file.\n\n"
    "\b\nExample:\n  launchctl launch -u examples/hello -E 'python train.py' --set lr=0.5",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"launchctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    pass


app.add_typer(queue_cmd.app, name="queue")
app.add_typer(job_cmd.app, name="job")
app.add_typer(runs_cmd.app, name="runs")
app.add_typer(secret_cmd.app, name="secret")
app.add_typer(team_cmd.app, name="team")
app.command("launch", no_args_is_help=True)(launch_cmd.launch)
app.command("agent")(agent_cmd.agent)
app.command("logs")(runs_cmd.logs)
app.command("gpus")(gpus_cmd.gpus)


def main() -> None:
    # Arguments may hold bytes that are not UTF-8 (Python keeps them as surrogates):
    # echoing them back must not crash the CLI.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    for arg in sys.argv[1:]:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8 reach Python as surrogates
            shown = arg.encode("utf-8", "backslashreplace").decode("ascii", "replace")[:60]
            sys.stderr.write(f"launchctl: error: argument {shown!r} is not valid UTF-8\n")
            sys.exit(2)
    try:
        # launchctl's own files are private (or group-shared): see launchctl/paths.py.
        paths.apply_umask()
        if sys.argv[1:2] == ["launch"]:  # W&B's bare `launch --queue` (issue 11)
            sys.argv[2:] = launch_cmd.bare_queue(sys.argv[2:])
        app(prog_name="launchctl")
    except LaunchctlError as exc:
        # One line, always: a value the user typed may itself hold newlines.
        message = str(exc).replace("\r", "\\r").replace("\n", "\\n")
        sys.stderr.write(f"launchctl: error: {message}\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("launchctl: interrupted\n")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:
        if os.environ.get("LAUNCHCTL_DEBUG"):
            raise
        sys.stderr.write(
            f"launchctl: internal error: {type(exc).__name__}: {exc}"
            " (set LAUNCHCTL_DEBUG=1 to see the traceback)\n"
        )
        sys.exit(1)
