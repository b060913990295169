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
from typing import Any

from launchctl import identity
from launchctl.errors import LaunchctlError, StateConflict, UsageError
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
    leaves alone with the reason. ``strict`` (``runs delete``): a run that runs still
    wait for, found so only in the transaction that deletes, refuses the whole delete
    instead of being kept."""

    def __init__(self, *, strict: bool = False) -> None:
        self.runs: list[Row] = []
        self.size = 0
        self.skipped: list[tuple[Row, str]] = []
        self.strict = strict
        self.waited: list[str] = []  # kept: runs that have not ended wait for their outcome


def waited_for_message(run_id: str, dependents: Sequence[Row]) -> str:
    """Why a run that others wait for is kept (issue 18), naming them: ``run X is waited
    for by Y (--after-ok; it is queued): delete it once they have ended, or cancel
    them``. Once ended they no longer read it; a run that started may still be requeued
    (preempted, its agent lost), and its claim would read its dependencies again."""
    from launchctl.workflow import FLAGS

    named = [f"{d['run_id']} ({FLAGS[d['kind']]}; it is {d['state']})" for d in dependents[:5]]
    more = f" and {len(dependents) - 5} more" if len(dependents) > 5 else ""
    them = "it has" if len(dependents) == 1 else "they have"
    return (
        f"run {run_id} is waited for by {', '.join(named)}{more}: delete it once {them}"
        f" ended, or cancel {'it' if len(dependents) == 1 else 'them'}"
    )


def _plan(store: Store, runs: Sequence[Row], user: str, *, strict: bool = False) -> Plan:
    from launchctl.store.housekeeping import waiting_dependents

    plan = Plan(strict=strict)
    waited = waiting_dependents(store.db, [r["id"] for r in runs if r["state"] in TERMINAL])
    for run in runs:
        if run["state"] not in TERMINAL:
            plan.skipped.append((run, f"it is {run['state']}"))
        elif not may_delete(store, run, user):
            plan.skipped.append((run, f"user '{user}' is not its author nor an admin"))
        elif waited.get(run["id"]):  # issue 18: deleting it would change their outcome
            plan.skipped.append((run, waited_for_message(run["id"], waited[run["id"]])))
            plan.waited.append(run["id"])
        else:
            plan.runs.append(run)
            plan.size += sum(disk_usage(p) for p in run_paths(store, run))
    return plan


def plan_delete(store: Store, run_ids: Sequence[str]) -> Plan:
    """The runs ``run_ids`` name (unique prefixes are enough), all of which must have
    ended and be the user's to delete: a refusal names the first that is not."""
    user = identity.current_user()
    runs = list({r["id"]: r for r in (store.runs.get(i) for i in run_ids)}.values())
    plan = _plan(store, runs, user, strict=True)
    for run, why in plan.skipped:
        if run["state"] not in TERMINAL:
            raise LaunchctlError(
                f"run {run['id']} is {run['state']}: only ended runs are deleted"
                f" (cancel it first with `launchctl runs cancel {run['id']}`)"
            )
        if may_delete(store, run, user):  # issue 18: runs still wait for its outcome
            raise StateConflict(why)
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
    from launchctl.store.runs import select_runs

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
    refuse = (
        (lambda rid, deps: StateConflict(waited_for_message(rid, deps))) if plan.strict else None
    )
    deleted = delete_ended_runs(store.db, list(by_id), refuse=refuse)
    problems: list[str] = []
    for rid in deleted:
        for path in paths[rid]:
            problems += _remove(path)
    left = sum(disk_usage(p) for rid in deleted for p in paths[rid])
    freed = max(0, sum(sizes[rid] for rid in deleted) - left)
    return deleted, freed, problems


__all__ = [
    "DEFAULT_PRUNE_STATES", "Plan", "check_prune_states", "disk_usage", "execute",
    "human_size", "list_images", "may_delete", "plan_delete", "plan_prune", "prune_images",
    "run_paths", "waited_for_message",
]  # fmt: skip


def delete_job(
    store: Store,
    ref: str,
    *,
    force: bool = False,
    confirm: Callable[[str], bool] = lambda _question: True,
) -> dict[str, Any] | None:
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


# -- images (issue 12 item 6) ------------------------------------------------------------
IMAGE_KEPT_ELSEWHERE = "built elsewhere"


def _image_key(uri: str) -> str:
    """An image name without its registry: ``127.0.0.1:5000/launchctl/job:tag`` and
    ``launchctl/job:tag`` are the same build (a pushed image runs by its registry name)."""
    at = uri.find("launchctl/")
    return uri[at:] if at >= 0 else uri


def _engine() -> object:
    from launchctl.images.engine import connect

    return connect()


def list_images(store: Store, client: object | None = None) -> list[dict[str, Any]]:
    """The images launchctl built on this engine (label ``launchctl.build``), newest first,
    each with its size, the job versions and runs of this home that point at it, and its
    status: ``in use`` (a run that has not ended names it), ``kept`` (a job version of this
    home points at it), ``unused`` (``images prune`` removes it) or ``built elsewhere``
    (another home's, or built before images said which home built them: never pruned)."""
    from launchctl.images.tag import (
        BUILD_LABEL,
        HOME_LABEL,
        HOME_TAG,
        JOB_LABEL,
        home_label,
        repository,
    )
    from launchctl.store.housekeeping import image_references

    engine: Any = client or _engine()
    mine = home_label(store.root)
    images = engine.images.list(filters={"label": BUILD_LABEL})
    usage = _image_usage(engine)
    refs: dict[str, list[Row]] = {}
    for ref in image_references(store.db):
        refs.setdefault(_image_key(str(ref["image"])), []).append(ref)
    out: list[dict[str, Any]] = []
    for image in images:
        labels = image.labels or {}
        job, build = str(labels.get(JOB_LABEL, "")), str(labels.get(BUILD_LABEL, ""))
        # REPO:TAG.home-HOME: the name a home gave the image when it reused another's build
        marks = {n: n.rpartition(HOME_TAG)[2] for n in image.tags if HOME_TAG in n}
        names = [n for n in image.tags if n not in marks]
        keys = {_image_key(n) for n in names}
        if job and build:
            keys.add(f"{repository(job, None)}:{build}")
        found = [r for k in sorted(keys) for r in refs.get(k, [])]
        active = sorted(
            {str(r["run_id"]) for r in found if r["state"] and r["state"] not in TERMINAL}
        )
        versions = sorted(
            {f"{r['entity']}/{r['name']}:v{r['version']}" for r in found if r["name"] is not None}
        )
        home = labels.get(HOME_LABEL)
        others = {h for h in marks.values() if h != mine}
        if home and home != mine:
            others.add(str(home))
        own_marks = [n for n, h in marks.items() if h == mine]
        remove: list[str] = []
        if home != mine and not own_marks:
            status = IMAGE_KEPT_ELSEWHERE
        elif active:
            status = "in use"
        elif versions:
            status = "kept"
        elif home == mine and others:
            status = "kept"  # another home reused it: it goes once that home lets it go
        else:
            status = "unused"
            # Built here: all its names; another home's build: only this home's own name.
            remove = names + own_marks if home == mine else own_marks
        size, unique, containers = usage.get(image.id, (image.attrs.get("Size", 0), None, None))
        out.append({
            "id": image.short_id.removeprefix("sha256:"),
            "image_id": image.id,
            "names": names,
            "other_homes": len(others),
            "remove": remove,
            "frees": home == mine,
            "job": job or None,
            "build": build or None,
            "home": "this" if home == mine else ("other" if home else None),
            "size": int(size or 0),
            "unique_size": None if unique is None else int(unique),
            "containers": containers,
            "created": image.attrs.get("Created"),
            "bases": _image_bases(labels),
            "versions": versions,
            "active_runs": active,
            "runs": sorted({str(r["run_id"]) for r in found if r["run_id"]}),
            "status": status,
        })  # fmt: skip
    out.sort(key=lambda i: str(i["created"] or ""), reverse=True)
    return out


def _image_bases(labels: dict[str, str]) -> list[str]:
    """The bases an image was built on (its ``launchctl.bases`` label, issue 20), each
    ``NAME DIGEST`` (the registry digest when known, else the local image ID); [] for an
    image built before images said so."""
    import json

    from launchctl.images.tag import BASES_LABEL

    try:
        found = json.loads(labels.get(BASES_LABEL) or "[]")
    except ValueError:
        return []
    return [
        f"{b.get('name')} {b.get('digest') or b.get('id')}"
        for b in (found if isinstance(found, list) else [])
        if isinstance(b, dict) and b.get("name")
    ]


def _image_usage(engine: Any) -> dict[str, tuple[int, int | None, int | None]]:
    """Each image's size, the bytes only it holds (not shared with another image) and the
    containers using it, from the engine's ``system df``; empty when the engine says no."""
    try:
        df = engine.df()
    except Exception:  # an engine without df: sizes from the image list, no shared sizes
        return {}
    usage: dict[str, tuple[int, int | None, int | None]] = {}
    for entry in df.get("Images") or []:
        size = int(entry.get("Size") or 0)
        shared = entry.get("SharedSize")
        unique = size - int(shared) if isinstance(shared, int) and shared >= 0 else None
        containers = entry.get("Containers")
        usage[str(entry.get("Id"))] = (
            size,
            unique,
            int(containers) if isinstance(containers, int) and containers >= 0 else None,
        )
    return usage


def prune_images(
    store: Store,
    confirm: Callable[[str], bool] = lambda _question: True,
    client: object | None = None,
) -> dict[str, Any] | None:
    """Remove this home's launchctl-built images that no job version of this home points
    at any more and no run that has not ended names (``list_images``' ``unused``); never
    another home's or one a container still uses. ``confirm(question)`` is asked once, with
    what would go; returns what was removed (``removed``, ``freed`` bytes, ``kept`` with the
    reasons), or None when it said no."""
    engine: Any = client or _engine()
    listed = list_images(store, engine)
    candidates = [i for i in listed if i["status"] == "unused"]
    kept: list[tuple[dict[str, Any], str]] = []
    chosen: list[dict[str, Any]] = []
    for image in candidates:
        if image["containers"]:
            kept.append((image, f"{image['containers']} container(s) use it"))
        else:
            chosen.append(image)
    result: dict[str, Any] = {"removed": [], "freed": 0, "kept": kept, "planned": chosen}
    if not chosen:
        return result
    size = sum(_own_size(i) for i in chosen if i["frees"])
    n = len(chosen)
    if not confirm(f"remove {n} unused image{'s' if n != 1 else ''} ({human_size(size)})?"):
        return None
    # Looked at again just before removing: a run may have been launched meanwhile.
    again = {str(i["image_id"]): i for i in list_images(store, engine)}
    removed: list[dict[str, Any]] = []
    for image in chosen:
        now = again.get(str(image["image_id"]))
        if now is None:
            continue  # gone already
        if now["status"] != "unused":
            kept.append((image, f"it is {now['status']} now"))
            continue
        why = _remove_image(engine, now)
        if why:
            kept.append((image, why))
        else:
            removed.append(image)
    result["removed"] = removed
    result["freed"] = sum(_own_size(i) for i in removed if i["frees"])
    return result


def _own_size(image: dict[str, Any]) -> int:
    unique = image.get("unique_size")
    return int(unique if isinstance(unique, int) else image.get("size") or 0)


def _remove_image(engine: Any, image: dict[str, Any]) -> str | None:
    """Remove an image by each of its names, never forced (the engine refuses one a
    container uses); the reason when it could not."""
    import docker

    names = list(image["remove"]) or [str(image["image_id"])]
    try:
        for name in names:
            engine.images.remove(name, force=False)
    except docker.errors.NotFound:
        return None
    except docker.errors.APIError as exc:
        return str(exc.explanation or exc).strip().splitlines()[-1][:200]
    return None
