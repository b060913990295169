"""How ``--help`` reads, in one place (issue 12, item 14), and shell completion of the
names a command line takes (issue 12, item 10).

The root group (:class:`StyledGroup`) walks the command tree Typer built and, where a
command does not set them itself:

* gives each option and argument a metavar in the usual style (``QUEUE``, ``FILE|JSON``,
  ``RUN_ID``), never Typer's ``<str>`` or ``{name}``;
* gives each command a short help (the line a group's listing shows) that is a whole
  sentence, never one Click cut with ``...``;
* completes queue names, job names and run ids from the store: read-only, only when the
  store exists, and silent (no candidates) on any failure.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import typer.core

# Metavar for a parameter, by its Python name; a few depend on the command (below).
METAVARS = {
    "uri": "DIR|URL",
    "job": "JOB",
    "ref": "JOB",
    "entry_point": "COMMAND",
    "docker_image": "IMAGE",
    "image": "IMAGE",
    "base_image": "IMAGE",
    "queue": "QUEUE",
    "config": "FILE|JSON",
    "resource_args": "FILE|JSON",
    "set_var": "NAME=VALUE",
    "set_": "KEY=VALUE",
    "resource": "RESOURCE",
    "dockerfile": "FILE",
    "log_file": "FILE",
    "file": "FILE",
    "priority": "PRIORITY",
    "project": "PROJECT",
    "entity": "ENTITY",
    "name": "NAME",
    "job_name": "NAME",
    "git_version": "REF",
    "git_hash": "REF",
    "build_context": "DIR",
    "path": "DIR",
    "url": "URL",
    "args": "ARGS",
    "max_jobs": "N",
    "max_schedulers": "N",
    "limit": "N",
    "gpus": "IDS",
    "gpu_busy_mb": "MIB",
    "gpu_backfill_s": "SECONDS",
    "grace": "SECONDS",
    "poll": "SECONDS",
    "interval": "SECONDS",
    "run_id": "RUN_ID",
    "run_ids": "RUN_ID...",
    "description": "DESCRIPTION",
    "variable": "VARIABLE",
    "type_": "TYPE",
    "minimum": "MIN",
    "maximum": "MAX",
    "default": "VALUE",
    "options": "A,B,C",
    "alias": "ALIAS",
    "runtime": "VERSION",
    "state": "STATE",
    "user": "USER",
}

# The NAME argument of these groups' commands is a queue, an entity...
_NAME_BY_GROUP = {"queue": "QUEUE", "template": "QUEUE", "team": "ENTITY"}

# Short help for commands whose first sentence is too long for a group's listing.
SHORT_HELP = {
    "launch": "Launch a run, now or on a queue.",
    "agent": "Claim runs from queues and run them.",
    "logs": "Print or follow a run's log.",
    "gpus": "Show each GPU and the runs on it.",
    "status": "Show queues, runs, agents and GPUs.",
    # launch-sweep widened the root listing's name column (issue 15): k8s's own line no
    # longer fits whole.
    "k8s": "Set up a Kubernetes cluster for launchctl.",
    "queue list": "List queues with their run counts.",
    "queue edit": "Replace a queue's config.",
    "sync": "Send runs to a W&B server when it is online.",
    "sync status": "Show what the W&B server is owed, per run.",
    "sync config": "Show or change the sync settings.",
    "queue pause": "Stop agents claiming this queue's runs.",
    "queue delete": "Delete a queue.",
    "queue render": "Print the config a run would get.",
    "queue template": "Show and define template variables.",
    "queue template show": "List a queue's template fields.",
    "queue template set": "Define a template variable.",
    "queue template unset": "Remove a template variable's definition.",
    "job show": "Show a job version and its versions.",
    "job delete": "Delete a job or one of its versions.",
    "job create": "Create a job (a new version if changed).",
    "job create code": "Snapshot a directory as a code job.",
    "job create image": "Create a job that runs a prebuilt image.",
    "job create git": "Create a job from a git repository.",
    "runs list": "List runs, newest first.",
    "runs show": "Show a run: spec, states, exit, log.",
    "runs cancel": "Cancel a queued or running run.",
    "runs rerun": "Queue a new run with the same spec.",
    "runs delete": "Delete ended runs and their files.",
    "runs prune": "Delete ended runs older than an age.",
    # issue 18: `release` widened the runs listing's name column; edit's line no longer fits.
    "runs hold": "Keep a queued run from being claimed.",
    "runs release": "Let a held run be claimed again.",
    "runs edit": "Change a queued run's values or priority.",
    "secret": "Set, list and delete secrets.",
    "secret set": "Store a secret (prompted or from stdin).",
    "secret list": "List the secrets' names.",
    "secret delete": "Delete a secret.",
    "team": "Create teams and manage their members.",
    "team add": "Add a user to an entity, or change a role.",
    "team remove": "Remove a user from an entity.",
    "team list": "List entities with your role in each.",
    "team show": "Show an entity's members and roles.",
    "images": "List and prune the images launchctl built.",
    "images list": "List the images launchctl built.",
    "images prune": "Remove images no job version needs.",
}


def _store_names(kind: str) -> list[str]:
    """Queue names, job names or run ids from the store; nothing when there is none."""
    from launchctl import paths

    if not paths.db_path().exists():
        return []
    from launchctl.cli.common import open_store

    store = open_store()
    if kind == "queue":
        from launchctl import queues

        return [str(row["name"]) for row in queues.listing(store)]
    if kind == "job":
        from launchctl import jobs

        return [str(row["name"]) for row in jobs.listing(store)]
    from launchctl import runs

    return [str(row["id"]) for row in runs.listing(store, limit=200)]


def _completer(kind: str) -> Any:
    def complete(ctx: Any, param: Any, incomplete: str) -> list[str]:
        try:
            names = _store_names(kind)
        except Exception:  # completion never fails loudly: no candidates instead
            return []
        return [name for name in names if name.startswith(incomplete)]

    return complete


_COMPLETE_BY_METAVAR = {"QUEUE": "queue", "JOB": "job", "RUN_ID": "run", "RUN_ID...": "run"}


class _Argument(typer.core.TyperArgument):
    """An argument shown as ``QUEUE`` in a usage line, not Typer 0.28's ``{QUEUE}``."""

    def make_metavar(self, ctx: Any, *, usage: bool = False) -> str:
        var = super().make_metavar(ctx, usage=usage)
        if usage and var.startswith("{") and var.endswith("}"):
            return var[1:-1]
        return var


def style(command: Any, path: tuple[str, ...] = ()) -> None:
    """Give ``command`` and its subcommands usual metavars, whole short helps and store
    completion, where they do not set their own."""
    key = " ".join(path)
    if key in SHORT_HELP and command.short_help is None:
        command.short_help = SHORT_HELP[key]
    for param in command.params:
        if param.name == "help" or getattr(param, "is_flag", False) or getattr(param, "count", 0):
            continue
        if param.metavar is None and param.name is not None:
            metavar = METAVARS.get(param.name, param.name.upper())
            if param.name == "name" and len(path) >= 2 and not param.opts[0].startswith("-"):
                metavar = _NAME_BY_GROUP.get(path[-2], metavar)
            param.metavar = metavar
        if type(param) is typer.core.TyperArgument:
            param.__class__ = _Argument
        kind = _COMPLETE_BY_METAVAR.get(param.metavar or "")
        if kind is not None and getattr(param, "_custom_shell_complete", None) is None:
            param._custom_shell_complete = _completer(kind)
    for name, sub in getattr(command, "commands", {}).items():
        style(sub, (*path, name))


class StyledGroup(typer.core.TyperGroup):
    """The root group: styles the whole tree once Typer has built it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        style(self)


def commands(command: Any, path: tuple[str, ...] = ()) -> Iterable[tuple[str, Any]]:
    """Every command under ``command`` with its path (``queue template set``)."""
    yield " ".join(path), command
    for name, sub in getattr(command, "commands", {}).items():
        yield from commands(sub, (*path, name))
