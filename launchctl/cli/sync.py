"""`launchctl sync`: push what a W&B-compatible server does not have yet; `sync status`:
what it is owed, per run. (`sync config` is in ``sync_config.py``.)"""

from __future__ import annotations

import sys
from typing import Any

import typer

from launchctl.cli import sync_config
from launchctl.cli.common import JSON_OPTION, open_store
from launchctl.cli.output import clean, emit_json, err, line, table

app = typer.Typer(
    help="Sync runs (and the outbox) with a W&B-compatible server when it is online.\n\n\b\n"
    "Example:\n  launchctl sync --base-url http://wandb.lab:8080 --since 7d",
    invoke_without_command=True,
    rich_markup_mode=None,
)

BASE_URL = typer.Option(
    None,
    "--base-url",
    metavar="URL",
    help="The W&B server (default: WANDB_BASE_URL, the sync.base_url setting, W&B's"
    " settings file, https://api.wandb.ai).",
)
ENTITY = typer.Option(
    None,
    "--entity",
    "-e",
    metavar="ENTITY",
    help="The W&B entity every run goes to (default: the sync.entity setting, else the run's own).",
)
PROJECT = typer.Option(
    None,
    "--project",
    "-p",
    metavar="PROJECT",
    help="The W&B project every run goes to (default: the sync.project setting, else the"
    " run's own).",
)
SINCE = typer.Option(
    None,
    "--since",
    metavar="WHEN",
    help="Only runs created since then: an age (2h, 7d) or an ISO date (2026-11-20).",
)


def _target(base_url: str | None, entity: str | None, project: str | None,
            since: str | None) -> tuple[Any, Any]:  # fmt: skip
    """The credentials and the sync target the flags name; refused before anything is
    written when a flag is wrong."""
    from launchctl import names, runs
    from launchctl.sync import credentials, engine

    start = runs.parse_since(since) if since is not None else None
    for value, what in ((entity, "entity"), (project, "project")):
        if value is not None:
            names.check_name(value, what)
    store = open_store()
    creds = credentials.resolve(base_url, store=store)
    target = engine.Target(
        store=store, base_url=creds.base_url, entity=entity, project=project, since=start
    )
    return creds, target


def _runs(n: int) -> str:
    return f"{n} run{'s' if n != 1 else ''}"


def _waiting(left: list[Any]) -> str:
    """What still waits, in words with its verb: "1 run waits", "3 runs and 2 other items
    wait"."""
    runs = len({o.run_id for o in left if o.step == "runs"})
    others = sum(1 for o in left if o.step != "runs")
    text = _runs(runs) if runs or not others else ""
    if others:
        text += f"{' and ' if text else ''}{others} item{'s' if others != 1 else ''}"
    return text + (" waits" if runs + others == 1 else " wait")


class _Progress:
    """Runs done out of the total, and the bytes sent, on one stderr line that rewrites
    itself; only on a terminal (a pipe or a test gets the final lines only)."""

    def __init__(self, server: Any) -> None:
        self.total = 0
        self.server = server
        self.done = 0
        self.on = False
        self.shown = False

    def start(self, owed: list[Any]) -> None:
        self.total = len(owed)
        self.on = self.total > 1 and sys.stderr.isatty()

    def __call__(self, sent: Any) -> None:
        self.done += 1
        if not self.on:
            return
        from launchctl.sync.runs_push import human_size

        sys.stderr.write(
            f"\rsyncing: {self.done}/{self.total} items, {human_size(self.server.bytes_sent)}"
            " sent\x1b[K"
        )
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


@app.callback(invoke_without_command=True)
def sync(
    ctx: typer.Context,
    base_url: str | None = BASE_URL,
    entity: str | None = ENTITY,
    project: str | None = PROJECT,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Say what would be sent; send nothing, change nothing."
    ),
    since: str | None = SINCE,
    as_json: bool = typer.Option(False, "--json", help="Print what was sent as JSON."),
) -> None:
    """Push what the W&B server does not have yet: each run as a W&B run (its config, state,
    log, metadata and summary), and the calls the outbox holds.

    A per-run cursor records what the server acknowledged, so a sync cut in the middle
    resumes where it stopped and two syncs in a row send nothing the second time. Only
    runs of entities you are a member of are sent. Offline (the server unreachable), it
    says so in one line and exits 0: the work waits for the next sync. The API key comes
    from WANDB_API_KEY, the secret `sync config --key-secret` names, or ~/.netrc; it is
    never printed.

    \b
    Example:
      export WANDB_API_KEY=...   # or: launchctl sync config --key-secret wandb-key
      launchctl sync --base-url http://wandb.lab:8080 --since 7d
      launchctl sync status
    """
    if ctx.invoked_subcommand is not None:
        return
    from launchctl.sync import engine
    from launchctl.sync.wire import WandbServer

    creds, target = _target(base_url, entity, project, since)
    server = WandbServer(creds)
    progress = _Progress(server)
    try:
        report = engine.sync(
            server, target, progress=progress, dry_run=dry_run, on_start=progress.start
        )
    finally:
        progress.close()
        server.close()
    if as_json:
        emit_json(
            {
                "base_url": creds.base_url,
                "dry_run": dry_run,
                "sent": [s.as_json() for s in report.sent],
                "bytes": report.bytes_sent,
                "requests": server.requests_sent,
                "offline": report.offline,
                "left": [o.as_json() for o in report.left],
            }
        )
        return
    url = clean(creds.base_url)
    if not report.owed:
        line(f"nothing to sync: the server at {url} has everything")
        return
    verb = "would send" if dry_run else "sent"
    for item in report.sent:
        what = ", ".join(item.what)
        line(f"{item.step} {item.run_id or '-'} -> {item.remote or '-'}: {verb} {what}")
    if report.offline is not None:
        err(
            f"{clean(report.offline)}: {_waiting(report.left)} in the outbox;"
            " run `launchctl sync` again"
        )
        return
    from launchctl.sync.runs_push import human_size

    if dry_run:
        line(f"dry run: {_waiting(report.owed)} to be sent to {url}; nothing was sent")
        return
    line(
        f"synced {_runs(len({s.run_id for s in report.sent if s.step == 'runs'}))} to {url}"
        f" ({server.requests_sent} requests, {human_size(report.bytes_sent)} of run data)"
    )


@app.command("status")
def status(
    base_url: str | None = BASE_URL,
    entity: str | None = ENTITY,
    project: str | None = PROJECT,
    since: str | None = SINCE,
    as_json: bool = JSON_OPTION,
) -> None:
    """Show what the W&B server is owed, per run: the upsert (the run is new or its state
    changed), log lines and bytes, the metadata file, the summary, the final `complete`,
    and the outbox's other items. Reads the store only: nothing is sent.

    \b
    Example:
      launchctl sync status --json
    """
    from launchctl.sync import engine

    creds, target = _target(base_url, entity, project, since)
    owed = engine.owed(target.store, target)
    if as_json:
        emit_json({"base_url": creds.base_url, "owed": [o.as_json() for o in owed]})
        return
    url = clean(creds.base_url)
    if not owed:
        line(f"nothing owed: the server at {url} has everything")
        return
    table(
        [(o.step, o.run_id or "-", o.remote or "-", o.detail) for o in owed],
        ["step", "run", "to", "owed"],
    )
    line(f"{_waiting(owed)} to be sent to {url} (run `launchctl sync`)")


app.command("config")(sync_config.config)
