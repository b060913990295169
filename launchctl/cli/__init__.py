"""The command line: thin Typer commands over the core API, one module per noun.

One exit-code rule for refusals (issue 12): a command line Click cannot parse (an
unknown command or option, a missing argument, a value of the wrong type or not among
the choices) exits 2, before any launchctl code runs; everything launchctl itself refuses
(``LaunchctlError``: an unknown queue, an invalid name, flags that cannot go together)
exits 1. Both print one line on stderr, ``launchctl: error: ...``; nothing here prints a
traceback unless LAUNCHCTL_DEBUG is set.
"""

from __future__ import annotations

import gc

_COLLECTING = gc.isenabled()
gc.disable()  # while the CLI loads (issue 17; see the end of this module)

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import typer

from launchctl import paths
from launchctl.cli import agent as agent_cmd
from launchctl.cli import gpus as gpus_cmd
from launchctl.cli import helpstyle
from launchctl.cli import images as images_cmd
from launchctl.cli import job as job_cmd
from launchctl.cli import k8s as k8s_cmd
from launchctl.cli import launch as launch_cmd
from launchctl.cli import queue as queue_cmd
from launchctl.cli import runs as runs_cmd
from launchctl.cli import secret as secret_cmd
from launchctl.cli import status as status_cmd
from launchctl.cli import sweep as sweep_cmd
from launchctl.cli import sync as sync_cmd
from launchctl.cli import team as team_cmd
from launchctl.cli import ui as ui_cmd
from launchctl.errors import LaunchctlError

try:  # typer 0.28 carries its own copy of Click; its exceptions are the ones raised
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - an older typer runs on Click itself
    from click import exceptions as click_errors  # type: ignore[no-redef]

PROG = "launchctl"
USAGE_EXIT = 2  # Click could not parse the command line; a LaunchctlError exits 1

app = typer.Typer(
    name="launchctl",
    help="A local-first job launcher for ML work: W&B Launch's jobs, queues and agents,"
    " in one CLI and one SQLite file.\n\n"
    "\b\nExample:\n  launchctl launch -u examples/hello -E 'python train.py' --set lr=0.5",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (issue 12, item 10)
    cls=helpstyle.StyledGroup,  # usual metavars, whole short helps (issue 12, item 14)
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from launchctl import buildinfo  # issue 17: and how this launchctl was built

        print(buildinfo.version_line())
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
app.add_typer(images_cmd.app, name="images")
app.add_typer(sync_cmd.app, name="sync")
app.add_typer(k8s_cmd.app, name="k8s")
app.add_typer(sweep_cmd.app, name="sweep")
app.command("launch", no_args_is_help=True)(launch_cmd.launch)
app.command("launch-sweep", no_args_is_help=True)(sweep_cmd.launch_sweep)
app.command("agent")(agent_cmd.agent)
app.command("logs")(runs_cmd.logs)
app.command("gpus")(gpus_cmd.gpus)
app.command("status")(status_cmd.status)
app.command("ui")(ui_cmd.ui)


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
        _named_completion_shell(sys.argv[1:])
        if sys.argv[1:2] == ["launch"]:  # W&B's bare `launch --queue` (issue 11)
            sys.argv[2:] = launch_cmd.bare_queue(sys.argv[2:])
        with only_the_command_named(sys.argv[1:]):
            code = app(prog_name=_prog_name(), standalone_mode=False)
    except LaunchctlError as exc:
        _error(str(exc))
        sys.exit(exc.exit_code)
    except click_errors.NoArgsIsHelpError as exc:  # `launchctl queue`: its help, exit 2
        exc.show()
        sys.exit(exc.exit_code)
    except click_errors.UsageError as exc:
        _error(click_message(exc) + _hint(exc.ctx))
        sys.exit(USAGE_EXIT)
    except click_errors.ClickException as exc:  # a file Click could not open...
        _error(click_message(exc))
        sys.exit(exc.exit_code)
    except typer.Abort as exc:  # a prompt declined or closed (EOF)
        if isinstance(exc.__context__, KeyboardInterrupt):
            sys.stderr.write("launchctl: interrupted\n")
            sys.exit(130)
        _error("aborted")
        sys.exit(1)
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
    # Not standalone, Click returns the code a typer.Exit carried (commands return None).
    sys.exit(code if isinstance(code, int) else 0)


@contextlib.contextmanager
def only_the_command_named(args: list[str]) -> Iterator[None]:
    """Typer builds every command's parameters on each call (about 30 ms for the 110 here,
    a third of a plain call's start): while a command line names one command exactly
    (``runs list ...``), only that command is registered (issue 17: an agent's start,
    and every other command's). Help of a group, a root option, completion, or a name
    that is not a command's (for Click's suggestions) keep them all."""
    saved: list[tuple[Any, list[Any], list[Any]]] = []
    try:
        if not os.environ.get("_LAUNCHCTL_COMPLETE"):
            _narrow(app, args, saved)
        yield
    finally:
        for typer_app, commands, groups in saved:
            typer_app.registered_commands, typer_app.registered_groups = commands, groups


def _narrow(typer_app: Any, args: list[str], saved: list[tuple[Any, list[Any], list[Any]]]) -> None:
    """Keep only the command or group ``args[0]`` names in ``typer_app`` (and so on down)."""
    if not args or args[0].startswith("-"):
        return
    name = args[0]
    commands = [c for c in typer_app.registered_commands if _name_of(c) == name]
    groups = [g for g in typer_app.registered_groups if g.name == name]
    if len(commands) + len(groups) != 1:
        return
    saved.append((typer_app, typer_app.registered_commands, typer_app.registered_groups))
    typer_app.registered_commands, typer_app.registered_groups = commands, groups
    if groups and groups[0].typer_instance is not None:
        _narrow(groups[0].typer_instance, args[1:], saved)


def _name_of(info: Any) -> str | None:
    if info.name:
        return str(info.name)
    if info.callback is None:
        return None
    return str(typer.main.get_command_name(info.callback.__name__))


COMPLETION_SHELLS = frozenset({"bash", "zsh", "fish", "powershell", "pwsh"})


def _named_completion_shell(args: list[str]) -> None:
    """``--show-completion bash`` / ``--install-completion zsh`` use the shell named: Typer's
    flags otherwise ignore the word and guess the shell from the parent processes, which
    fails where no shell is among them (a service, a CI step, ``setsid``)."""
    for flag in ("--show-completion", "--install-completion"):
        at = args.index(flag) + 1 if flag in args else 0
        named = at and at < len(args) and args[at] in COMPLETION_SHELLS
        if named or any(a.split("=", 1)[0] == flag and "=" in a for a in args):
            # Typer's own switch: the two options then take the shell as their value.
            os.environ["_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION"] = "1"
            return


def _prog_name() -> str:
    """``lctl`` when run as the short entry point (issue 12 item 16), so help and hints
    name the command the user typed; ``launchctl`` otherwise."""
    return "lctl" if os.path.basename(sys.argv[0] or "") == "lctl" else PROG


def click_message(exc: click_errors.ClickException) -> str:
    """Click's message in launchctl's style: lower-case start, no closing full stop."""
    text = exc.format_message().strip()
    if text[:1].isupper() and text[1:2].islower():
        text = text[0].lower() + text[1:]
    return text.removesuffix(".")


def _hint(ctx: Any) -> str:
    path = ctx.command_path if ctx is not None else _command_path(sys.argv[1:])
    return f" (try '{path} --help')"


def _command_path(args: list[str]) -> str:
    """The command the arguments name (``launchctl queue create``), for an error Click
    raised without its context (an option missing its value)."""
    command: Any = typer.main.get_command(app)
    path = [_prog_name()]
    for arg in args:
        if arg.startswith("-"):
            continue
        sub = getattr(command, "commands", {}).get(arg)
        if sub is None:
            break
        command = sub
        path.append(arg)
    return " ".join(path)


def _error(message: str) -> None:
    # One line, always: a value the user typed may itself hold newlines.
    message = message.replace("\r", "\\r").replace("\n", "\\n")
    sys.stderr.write(f"launchctl: error: {message}\n")


# Issue 17: loading the CLI makes some twenty thousand objects and no garbage; the
# collector, which runs every 700 new objects, took 5-9 ms of each command's start here
# (of about 75 for the imports). It is off from the top of this module to here, and on
# again (if it was) for the command itself.
if _COLLECTING:
    gc.enable()
