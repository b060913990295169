"""One sync pass with a W&B-compatible server: what the server is owed, and sending it.

A pass runs its steps in order (``STEPS``: one module each). A step exposes

- ``owed(store, target) -> list[Owed]``: what the server lacks, read from the store and the
  run files only (no network), for ``launchctl sync status`` and ``--dry-run``;
- ``send(server, target, *, progress, dry_run) -> list[Sent]``: send it, recording each
  piece in the store only after the server acknowledged it, so a pass cut anywhere (the
  server gone mid-way) is resumed by the next one with nothing sent twice or lost. It
  calls ``progress(sent)`` once per owed item done and returns the same ``Sent`` items.

``Unreachable`` from a step ends the pass quietly (``Report.offline``): what was not sent
is still owed and the next pass sends it. ``Refused`` (bad credentials, a GraphQL error)
is raised to the caller, one line.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from launchctl import identity

if TYPE_CHECKING:
    from launchctl.store import Store
    from launchctl.sync.wire import WandbServer

# The steps of a pass, in order. C (the outbox) and D (wandb offline folders) add theirs.
STEPS: list[str] = [
    "launchctl.sync.remote_queue",
    "launchctl.sync.runs_push",
    "launchctl.sync.wandb_offline",
]


@dataclass(frozen=True)
class Target:
    """Where a pass sends, and what it covers.

    ``entity``/``project``: where runs go on the server (``--entity``/``--project``; None:
    the store settings ``sync.entity``/``sync.project``, else the run's own). ``since``: only
    runs created at or after this time (epoch seconds). ``run_ids``: only these runs (an
    agent pushing the runs of the remote items it took). ``user``: who syncs; only runs of
    entities they are a member of are sent.
    """

    store: Store
    base_url: str
    entity: str | None = None
    project: str | None = None
    since: float | None = None
    run_ids: tuple[str, ...] | None = None
    user: str = field(default_factory=identity.current_user)


@dataclass(frozen=True)
class Owed:
    """One thing a server lacks: for the runs step, one run and what of it is owed."""

    step: str  # the step's short name: "runs", "outbox", "wandb-offline"
    run_id: str | None
    what: tuple[str, ...]  # e.g. ("upsert", "log", "metadata", "summary", "complete")
    detail: str  # in words, for `sync status`: "upsert, 12 log lines (1.2 kB), complete"
    remote: str | None = None  # where it goes on the server: ENTITY/PROJECT/NAME
    bytes: int = 0  # about how many bytes of run data it will send
    extra: dict[str, Any] = field(default_factory=dict)  # step-specific, for --json

    def as_json(self) -> dict[str, Any]:
        return {
            "step": self.step, "run": self.run_id, "owed": list(self.what),
            "detail": self.detail, "remote": self.remote, "bytes": self.bytes, **self.extra,
        }  # fmt: skip


@dataclass(frozen=True)
class Sent:
    """One owed item the server acknowledged (or, with ``dry_run``, would be sent)."""

    step: str
    run_id: str | None
    what: tuple[str, ...]
    remote: str | None = None
    bytes: int = 0  # bytes of run data sent (log lines, summary, metadata)
    requests: int = 0  # HTTP requests it took
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "step": self.step, "run": self.run_id, "sent": list(self.what),
            "remote": self.remote, "bytes": self.bytes, "requests": self.requests, **self.extra,
        }  # fmt: skip


Progress = Callable[[Sent], None]


@dataclass
class Report:
    """What one pass did: ``sent`` (acknowledged items, in order), ``owed`` (what was owed at
    the start), ``offline`` (the one line saying the server could not be reached, when it
    could not), and ``left`` (what is still owed after an offline stop)."""

    target: Target
    owed: list[Owed]
    sent: list[Sent] = field(default_factory=list)
    offline: str | None = None
    left: list[Owed] = field(default_factory=list)
    dry_run: bool = False

    @property
    def bytes_sent(self) -> int:
        return sum(s.bytes for s in self.sent)


def steps(names: Sequence[str] | None = None) -> list[ModuleType]:
    """The step modules, in order."""
    return [importlib.import_module(name) for name in (STEPS if names is None else names)]


def owed(store: Store, target: Target) -> list[Owed]:
    """Everything ``target``'s server lacks, step by step (no network)."""
    return [item for step in steps() for item in step.owed(store, target)]


def sync(
    server: WandbServer,
    target: Target,
    progress: Progress | None = None,
    dry_run: bool = False,
    on_start: Callable[[list[Owed]], None] | None = None,
) -> Report:
    """One pass: send what is owed, step by step. Never raises ``Unreachable``: the report
    says the server was offline and what still waits. ``Refused`` is raised (one line).
    ``on_start`` gets what is owed before anything is sent (a progress display's total)."""
    from launchctl.sync.wire import Unreachable

    report = Report(target=target, owed=owed(target.store, target), dry_run=dry_run)
    if on_start is not None:
        on_start(report.owed)
    if not report.owed:
        return report  # nothing owed: not one request, so two syncs in a row send nothing once

    def on_sent(item: Sent) -> None:
        report.sent.append(item)
        if progress is not None:
            progress(item)

    try:
        if not dry_run:
            server.viewer()  # bad credentials are one clear line before anything is sent
        for step in steps():
            step.send(server, target, progress=on_sent, dry_run=dry_run)
    except Unreachable as exc:
        report.offline = str(exc)
        report.left = owed(target.store, target)
    return report


__all__ = ["STEPS", "Owed", "Progress", "Report", "Sent", "Target", "owed", "steps", "sync"]
