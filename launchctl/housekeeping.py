"""Housekeeping (issue 12 item 6): delete ended runs with their logs and work folders,
prune old ones, delete jobs no run needs, and prune the images launchctl built.

Nothing here touches a run that has not ended: queued, claimed, building, starting and
running runs are refused by name and skipped by ``prune``. Files are removed only inside
launchctl's home, whatever path a run's row names, so a forged row cannot aim a delete
at someone else's files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from launchctl import identity
from launchctl.errors import LaunchctlError, UsageError
from launchctl.follow import log_path
from launchctl.states import TERMINAL, State
from launchctl.store import Row, Store
from launchctl.teams import PermissionDenied

DEFAULT_PRUNE_STATES = (State.FINISHED.value, State.FAILED.value, State.STOPPED.value)


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"  # pragma: no cover


def may_delete(store: Store, run: Row, user: str) -> bool:
    """The rule of ``runs cancel``: the run's author, or an admin of its entity or of the
    entity that owns its queue."""
    if run["spec"].get("author") is not None and run["spec"].get("author") == user:
        return True
    queue = store.queues.by_id(run["queue_id"]) if run["queue_id"] is not None else None
    entities = {e for e in (run["entity"], queue and queue["entity"]) if e}
    return any(store.teams.role(str(e), user) == "admin" for e in entities)


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root.resolve())
    except OSError:
        return False


def run_paths(store: Store, run: Row) -> list[Path]:
    """The files and folders a run left: its run folder (log, work folder) and its log
    when kept elsewhere, only those inside launchctl's home."""
    found = [store.run_dir(run["id"]), log_path(store, run)]
    if run.get("workdir"):
        found.append(Path(run["workdir"]))
    out: list[Path] = []
    for path in found:
        if not _inside(path, store.root) or any(_inside(path, p) for p in out):
            continue
        out.append(path)
    return out


def disk_usage(path: Path) -> int:
    """Bytes under ``path``, not following links."""
    try:
        st = path.lstat()
    except OSError:
        return 0
    if not path.is_dir() or path.is_symlink():
        return st.st_size
    total = 0
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(top, name)).st_size
    return total


def _remove(path: Path) -> list[str]:
    problems: list[str] = []
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, onerror=lambda _f, p, e: problems.append(f"{p}: {e[1]}"))
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            problems.append(f"{path}: {exc}")
    return problems


class Plan:
    """What a delete or prune would remove: the runs, the bytes they hold, and what it
    leaves alone with the reason."""

    def __init__(self) -> None:
        self.runs: list[Row] = []
        self.size = 0
        self.skipped: list[tuple[Row, str]] = []


def _plan(store: Store, runs: Sequence[Row], user: str) -> Plan:
    plan = Plan()
    for run in runs:
        if run["state"] not in TERMINAL:
            plan.skipped.append((run, f"it is {run['state']}"))
        elif not may_delete(store, run, user):
            plan.skipped.append((run, f"user '{user}' is not its author nor an admin"))
        else:
            plan.runs.append(run)
            plan.size += sum(disk_usage(p) for p in run_paths(store, run))
    return plan


def plan_delete(store: Store, run_ids: Sequence[str]) -> Plan:
    """The runs ``run_ids`` name (unique prefixes are enough), all of which must have
    ended and be the user's to delete: a refusal names the first that is not."""
    user = identity.current_user()
    runs = list({r["id"]: r for r in (store.runs.get(i) for i in run_ids)}.values())
    plan = _plan(store, runs, user)
    for run, _why in plan.skipped:
        if run["state"] not in TERMINAL:
            raise LaunchctlError(
                f"run {run['id']} is {run['state']}: only ended runs are deleted"
                f" (cancel it first with `launchctl runs cancel {run['id']}`)"
            )
        raise PermissionDenied(
            f"user '{user}' may not delete run {run['id']}: only its author"
            f" ('{run['spec'].get('author') or 'unknown'}') or an admin of its entity may"
        )
    return plan


def check_prune_states(states: Sequence[str]) -> list[str]:
    """``--state`` for prune: ended states only (comma-separated or repeated)."""
    chosen = [s.strip() for text in states for s in text.split(",") if s.strip()]
    ended = sorted(s.value for s in TERMINAL)
    for s in chosen:
        if s not in ended:
            raise UsageError(
                f"runs prune removes ended runs only: state {s!r} is not one of {', '.join(ended)}"
            )
    return chosen or list(DEFAULT_PRUNE_STATES)


def plan_prune(store: Store, *, older_than_s: float, states: Sequence[str]) -> Plan:
    """Ended runs in ``states`` that ended more than ``older_than_s`` ago; runs the user
    may not delete are skipped, with the reason."""
    from launchctl.store.housekeeping import select_runs

    rows = select_runs(
        store.db, states=check_prune_states(states), before=time.time() - older_than_s,
        limit=None,
    )  # fmt: skip
    return _plan(store, rows, identity.current_user())


def execute(store: Store, plan: Plan) -> tuple[list[str], int, list[str]]:
    """Delete the planned runs (rows first, in one transaction that re-checks each has
    ended, then their files). Returns the ids deleted, the bytes freed and any file that
    could not be removed."""
    from launchctl.store.housekeeping import delete_ended_runs

    by_id = {r["id"]: r for r in plan.runs}
    paths = {rid: run_paths(store, run) for rid, run in by_id.items()}
    sizes = {rid: sum(disk_usage(p) for p in ps) for rid, ps in paths.items()}
    deleted = delete_ended_runs(store.db, list(by_id))
    problems: list[str] = []
    for rid in deleted:
        for path in paths[rid]:
            problems += _remove(path)
    left = sum(disk_usage(p) for rid in deleted for p in paths[rid])
    freed = max(0, sum(sizes[rid] for rid in deleted) - left)
    return deleted, freed, problems


__all__ = [
    "DEFAULT_PRUNE_STATES", "Plan", "check_prune_states", "disk_usage", "execute",
    "human_size", "may_delete", "plan_delete", "plan_prune", "run_paths",
]  # fmt: skip


def delete_job(
    store: Store,
    ref: str,
    *,
    force: bool = False,
    confirm: Callable[[str], bool] = lambda _question: True,
) -> dict[str, object] | None:
    """Delete job ``NAME`` (every version) or one version ``NAME:vN``/``NAME:ALIAS``.

    Refused while a run that has not ended was made from it (always: a queued or running
    run is never touched) and, unless ``force``, while ended runs were (a rerun needs the
    version; forced, they keep their record). Only an admin of the job's entity, or the
    author of every version deleted, may. ``confirm(question)`` is asked once the checks
    pass; returns what was deleted, or None when it said no."""
    from launchctl.jobs import find_version, version_ref
    from launchctl.store.housekeeping import delete_versions, runs_of_versions

    user = identity.current_user()
    row = find_version(store, ref, prefer=user)
    one = ":" in ref.rpartition("/")[2]
    versions = [row] if one else store.jobs.versions(int(row["job_id"]))
    entity = str(row["entity"])
    if store.teams.role(entity, user) != "admin":
        theirs = [v for v in versions if v.get("author") != user]
        if theirs:
            raise PermissionDenied(
                f"user '{user}' may not delete {version_ref(theirs[0])}: only its author"
                f" ('{theirs[0].get('author') or 'unknown'}') or an admin of entity"
                f" '{entity}' may"
            )
    what = version_ref(row) if one else f"job {entity}/{row['name']}"
    ids = [int(v["id"]) for v in versions]
    runs = runs_of_versions(store.db, ids)
    active = [r for r in runs if r["state"] not in TERMINAL]
    if active:
        raise LaunchctlError(
            f"{what} is needed by run {active[0]['id']} ({active[0]['state']})"
            + (f" and {len(active) - 1} more" if len(active) > 1 else "")
            + ": wait for it to end or cancel it first"
        )
    if runs and not force:
        raise LaunchctlError(
            f"{what} is needed by {len(runs)} ended run{'s' if len(runs) != 1 else ''}"
            f" (e.g. {runs[0]['id']}; `runs rerun` uses it): pass --force to delete it anyway"
            " (the runs keep their record), or delete the runs first"
        )
    n = len(ids)
    if not confirm(f"delete {what} ({n} version{'s' if n != 1 else ''})?"):
        return None
    deleted, freed = delete_versions(store.db, int(row["job_id"]), ids)
    return {"deleted": what, "versions": deleted, "runs": len(runs), "freed": freed}
