"""Job arrays (issue 18): ``launch --array 0-15%4`` queues 16 runs of one spec, at most 4
of them in flight at once, as Slurm's ``sbatch --array=0-15%4`` does.

This module parses what a user types (``--array``, an array id), and does what the
group commands ask (list, cancel, rerun an array) through the store's ``arrays`` table.
The throttle (``%N``) is not kept here: every claim counts the array's runs in flight in
its own transaction (``launchctl.store.runs.ARRAY_OK``).

An array's id is its own: ``a-`` and eight letters or digits (``a-3kx9q2ab``), never a
run's id (those have no ``-``), so ``--after a-3kx9q2ab`` waits for the whole array as
Slurm's ``afterok:<array job id>`` does.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from launchctl.errors import NotFound, StateConflict, UsageError

# The most runs one array may hold (Slurm's default MaxArraySize is 1001); and the
# largest index (Slurm's is MaxArraySize - 1: an index is a number, not a run count).
MAX_TASKS = 10_000
MAX_INDEX = 9_999_999
# The most dependency rows one array launch may write (its runs times each one's --after).
MAX_DEP_ROWS = 200_000
ID_PREFIX = "a-"
_ALPHABET = string.ascii_lowercase + string.digits
_ID = re.compile(r"a-[a-z0-9]{1,8}")
_ITEM = re.compile(r"([0-9]{1,7})(?:-([0-9]{1,7})(?::([0-9]{1,7}))?)?")
_LIMIT = re.compile(r"[0-9]{1,7}")
_EXAMPLES = "e.g. 0-15, 1,3,5-7, 0-15:4 or 0-15%4"


@dataclass(frozen=True)
class ArraySpec:
    """A parsed ``--array``: its indices in the order given, and ``limit`` (``%N``: how
    many may be in flight at once; None: no limit)."""

    text: str
    indices: tuple[int, ...]
    limit: int | None

    @property
    def count(self) -> int:
        return len(self.indices)


def parse(text: str) -> ArraySpec:
    """``--array``: indices as Slurm's ``sbatch --array`` takes them: a range ``0-15``, a
    list ``1,3,5-7``, a range with a step ``0-15:4``, each list optionally ending in a
    throttle ``%4``. Refused in one line: nothing, a range that runs backwards, a step of
    0, ``%0``, an index named twice, more than MAX_TASKS runs."""
    value = text.strip()
    bad = f"invalid --array {text!r}"
    if not value:
        raise UsageError(f"{bad}: expected indices, {_EXAMPLES}")
    body, percent, throttle = value.partition("%")
    limit: int | None = None
    if percent:
        if not _LIMIT.fullmatch(throttle):
            raise UsageError(f"{bad}: %N takes a whole number of runs, e.g. 0-15%4")
        limit = int(throttle)
        if limit < 1:
            raise UsageError(f"{bad}: %{throttle} lets no run start; at least %1")
    indices: list[int] = []
    seen: set[int] = set()
    for item in body.split(","):
        match = _ITEM.fullmatch(item)
        if match is None:
            raise UsageError(f"{bad}: {item!r} is not an index or a range; {_EXAMPLES}")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        step = int(match.group(3)) if match.group(3) is not None else 1
        if last < first:
            raise UsageError(f"{bad}: the range {item} runs backwards ({first} > {last})")
        if step < 1:
            raise UsageError(f"{bad}: the step of {item} is 0; at least :1")
        if last > MAX_INDEX:
            raise UsageError(f"{bad}: an index is at most {MAX_INDEX}")
        if len(indices) + (last - first) // step + 1 > MAX_TASKS:  # before making them
            raise UsageError(f"{bad}: an array holds at most {MAX_TASKS} runs")
        for index in range(first, last + 1, step):
            if index in seen:
                raise UsageError(f"{bad}: index {index} is named twice")
            seen.add(index)
            indices.append(index)
    return ArraySpec(text=value, indices=tuple(indices), limit=limit)


def new_array_id() -> str:
    """``a-`` and 8 letters or digits: never a run's id (a run's has no ``-``)."""
    return ID_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(8))


def is_array_id(text: str) -> bool:
    """Whether ``text`` names an array (or a prefix of one's id), not a run."""
    return text.startswith(ID_PREFIX)


def check_id(text: str) -> str:
    """An array id (or a unique prefix of one, ``a-3kx``) as typed: refused in one line
    when it cannot be one (before the store is opened)."""
    value = text.strip()
    if not _ID.fullmatch(value):
        raise UsageError(
            f"invalid array id {text!r}: an array's id is a- and up to 8 letters or digits"
            " (`launchctl launch --array` printed it)"
        )
    return value


def facts(array_id: str, indices: Sequence[int]) -> list[dict[str, Any]]:
    """What each run of an array carries in its spec (``spec["array"]``), for its
    environment (``launchctl.runenv``): the array, its index, how many runs the array
    has and its lowest and highest index (Slurm's SLURM_ARRAY_TASK_COUNT/_MIN/_MAX)."""
    shared = {"count": len(indices), "min": min(indices), "max": max(indices)}
    return [{"id": array_id, "index": index, **shared} for index in indices]


# -- launching one --------------------------------------------------------------------------
def submit(
    store: Any, spec: dict[str, Any], array: ArraySpec, *, say: Any = None
) -> tuple[str, list[Any]]:
    """Store ``array.count`` queued runs of one launch spec, checked once as ``launch -q``
    checks a run (a ``-u`` launch writes its job's version once), all in ONE transaction:
    a failure leaves none of them. Each run gets its own id and (unless ``--name`` gave
    one) its own name, its index in ``array_index`` and in its spec's ``array`` (what its
    environment says), and the array's ``%N`` in ``array_limit``. Returns the array id
    and the runs, by index order as given."""
    from launchctl import launch

    if not spec.get("queue"):
        raise UsageError("--array needs a queue (-q): its runs wait there for agents")
    named = bool(spec.get("name"))
    first = launch.build_run(store, spec, **({"say": say} if say else {}))
    waits = len(first.get("after") or [])
    if waits * array.count > MAX_DEP_ROWS:
        raise UsageError(
            f"{array.count} runs each waiting for {waits} runs is too many dependencies"
            f" (at most {MAX_DEP_ROWS} in all)"
        )
    array_id = new_array_id()
    base = first["name"].rsplit("-", 1)[0]
    rows = []
    ids = {first["id"]}
    for n, about in enumerate(facts(array_id, array.indices)):
        # Only top-level keys differ: the rest of the spec is shared, never changed.
        row = dict(first, spec=dict(first["spec"], array=about))
        row["after"] = list(first.get("after") or [])
        while n and row["id"] in ids:
            row["id"] = launch.new_run_id()
        ids.add(row["id"])
        if not named:
            row["name"] = row["spec"]["name"] = launch.default_name(base, row["id"])
        row.update(array_id=array_id, array_index=about["index"], array_limit=array.limit)
        rows.append(row)
    return array_id, store.arrays.insert(rows)


# -- the group commands ---------------------------------------------------------------------
def resolve(store: Any, given: str) -> str:
    """The full id of the array ``given`` names (a unique prefix is enough)."""
    return str(store.arrays.resolve(check_id(given)))


def listing(store: Any, given: str, states: Sequence[str] = (), limit: int = 0) -> list[Any]:
    """The runs of one array, by index (``runs list --array``), only in ``states``; each
    with ``attempts`` as ``runs list`` gives it."""
    from launchctl.store import housekeeping

    rows = store.arrays.runs(resolve(store, given), states=list(states))
    if limit:
        rows = rows[:limit]
    counts = housekeeping.attempt_counts(store.db, [r["id"] for r in rows])
    for row in rows:
        row["attempts"] = counts.get(row["id"], 0)
    return list(rows)


@dataclass
class Cancelled:
    """What ``runs cancel --array`` did: each run and its state after, each refusal."""

    array_id: str
    done: list[tuple[Any, str]]
    refused: list[tuple[Any, str]]


def cancel(store: Any, given: str) -> Cancelled:
    """Cancel every unfinished run of an array, each as ``runs cancel`` decides (its
    author, or an admin of its entity or its queue's, may). The queued ones go first, so
    that none of them is claimed in a slot a stopping run leaves."""
    from launchctl.states import ACTIVE
    from launchctl.teams import PermissionDenied, require_canceller

    array_id = resolve(store, given)
    rows = [r for r in store.arrays.runs(array_id) if r["state"] == "queued"]
    rows += [r for r in store.arrays.runs(array_id) if r["state"] in ACTIVE]
    out = Cancelled(array_id, [], [])
    for run in rows:
        try:
            user = require_canceller(store, run)
            out.done.append((run, store.runs.request_cancel(run["id"], by=user)))
        except PermissionDenied as exc:
            out.refused.append((run, str(exc)))
        except StateConflict:  # it ended meanwhile: nothing left to cancel
            continue
    return out


@dataclass
class Held:
    """What ``runs hold/release --array`` did: the runs it changed, those already so, each
    refusal (another's run, one claimed meanwhile)."""

    array_id: str
    changed: list[Any]
    unchanged: list[Any]
    refused: list[tuple[Any, str]]


def hold(store: Any, given: str, held: bool) -> Held:
    """Hold (or release) every queued run of an array, each as ``runs hold`` decides (its
    author, or an admin of its entity or its queue's; only while it is queued), as
    ``scontrol hold`` does an array job's pending tasks. Runs already claimed or ended are
    left alone: a hold is about what has not started."""
    from launchctl.teams import PermissionDenied, require_canceller

    array_id = resolve(store, given)
    out = Held(array_id, [], [], [])
    for run in store.arrays.runs(array_id, states=["queued"]):
        try:  # the rule of workflow.hold (which imports this module for --after ARRAY)
            user = require_canceller(store, run, action="hold" if held else "release")
        except PermissionDenied as exc:
            out.refused.append((run, str(exc)))
            continue
        try:  # checked and changed in one transaction, as the claim that would take it
            changed = store.runs.set_held(run["id"], held, user)
        except StateConflict:  # claimed (or cancelled) meanwhile: no longer queued
            continue
        (out.changed if changed else out.unchanged).append(run)
    return out


def rerun(
    store: Any, given: str, *, failed: bool = False, sets: Sequence[str] = (),
    priority: str | None = None,
) -> tuple[str, list[Any]]:  # fmt: skip
    """Rerun an array's runs (``failed``: only those that failed and have no rerun yet)
    as a NEW array with the same ``%N``, each recorded as a rerun of its original and
    keeping its index. All of them or none: one transaction. Only a run's author or an
    admin of its entity may (as ``runs rerun --failed`` decides); a refusal names the
    first run refused. Returns the new array's id and its runs."""
    from launchctl import launch
    from launchctl.teams import require_canceller

    changes = launch.parse_set(list(sets)) if sets else {}
    prio = launch.parse_priority(priority) if priority else None
    array_id = resolve(store, given)
    olds = store.arrays.runs(array_id, states=["failed"] if failed else [])
    if failed:
        later = store.runs.reruns_of(r["id"] for r in olds)
        olds = [r for r in olds if r["id"] not in later]
    if not olds:
        what = "no failed run without a rerun" if failed else "no runs"
        raise NotFound(f"array {array_id} has {what}")
    for old in olds:
        require_canceller(store, old, action="rerun")
    new_id = new_array_id()
    about = facts(new_id, [int(r["array_index"]) for r in olds])
    rows = []
    for old, mine in zip(olds, about, strict=True):
        row = launch.rerun_row(store, old, changes, prio)
        row["spec"]["array"] = mine
        row.update(array_id=new_id, array_index=old["array_index"], array_limit=old["array_limit"])
        rows.append(row)
    return new_id, store.arrays.insert(rows, first_reruns=failed)
