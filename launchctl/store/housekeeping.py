"""SQL for looking back over runs and cleaning up: the filtered run listing (by job,
project, age), attempt counts, and deleting runs and job versions (issue 12)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from launchctl.states import State
from launchctl.store.db import Database, Row


def attempt_counts(db: Database, run_ids: Sequence[str]) -> dict[str, int]:
    """How many times each run was claimed (one attempt per claim)."""
    if not run_ids:
        return {}
    rows = db.all(
        "SELECT run_id, COUNT(*) AS n FROM events"
        " WHERE to_state = ? AND COALESCE(from_state, '') != ?"
        f" AND run_id IN ({', '.join('?' for _ in run_ids)}) GROUP BY run_id",
        [State.CLAIMED.value, State.CLAIMED.value, *run_ids],
    )
    return {str(r["run_id"]): int(r["n"]) for r in rows}


# The kinds of dependency whose outcome a deleted run would change (issue 18): a claim
# reads a deleted dependency as ended and not finished, so deleting a finished run dooms
# an --after-ok dependent that would have run, and lets an --after-fail one run that
# would have been doomed. An --after dependent waits only for its end, which stays.
OUTCOME_KINDS = ("ok", "fail")


def waiting_dependents(db: Database, run_ids: Sequence[str]) -> dict[str, list[Row]]:
    """For each of ``run_ids``, the runs that have not ended and wait for its outcome
    (``--after-ok``, ``--after-fail``): ``run_id``, ``kind``, ``state``, oldest first. A
    run that has started counts too: if it is requeued (preempted, its agent lost) its
    claim reads its dependencies again. Reads the ``run_deps_dep`` index."""
    from launchctl.states import TERMINAL
    from launchctl.store.runs import sql_states

    out: dict[str, list[Row]] = {}
    ids = list(run_ids)
    kinds = ", ".join(f"'{k}'" for k in OUTCOME_KINDS)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for row in db.all(
            "SELECT d.dep_id, d.run_id, d.kind, r.state FROM run_deps d"
            " JOIN runs r ON r.id = d.run_id"
            f" WHERE d.dep_id IN ({', '.join('?' for _ in chunk)}) AND d.kind IN ({kinds})"
            f" AND r.state NOT IN {sql_states(TERMINAL)} ORDER BY r.seq",
            chunk,
        ):
            out.setdefault(str(row["dep_id"]), []).append(row)
    return out


def delete_ended_runs(
    db: Database,
    run_ids: Sequence[str],
    *,
    refuse: Callable[[str, list[Row]], Exception] | None = None,
) -> list[str]:
    """Delete the runs among ``run_ids`` that have ended and that no unended run waits
    for (``waiting_dependents``), with their events, in one transaction that re-checks
    both there: a run that was requeued or rerun meanwhile stays, and so does one that a
    run launched meanwhile waits for (launch checks its dependencies exist in its insert's
    transaction, so one of the two always sees the other). With ``refuse``, such a run
    raises ``refuse(run id, its dependents)`` instead and nothing is deleted. Returns the
    ids deleted."""
    from launchctl.states import TERMINAL
    from launchctl.store.runs import sql_states

    done: list[str] = []
    with db.write():
        waited = waiting_dependents(db, run_ids)
        for run_id in run_ids:
            if waited.get(run_id):
                if refuse is not None:
                    raise refuse(run_id, waited[run_id])
                continue
            cur = db.execute(
                f"DELETE FROM runs WHERE id = ? AND state IN {sql_states(TERMINAL)}", [run_id]
            )
            if cur.rowcount:
                done.append(run_id)
    return done


def runs_of_versions(db: Database, version_ids: Sequence[int]) -> list[Row]:
    """The runs (id, state) made from any of ``version_ids``."""
    if not version_ids:
        return []
    return db.all(
        "SELECT id, state FROM runs"
        f" WHERE job_version_id IN ({', '.join('?' for _ in version_ids)}) ORDER BY seq",
        list(version_ids),
    )


def delete_versions(db: Database, job_id: int, version_ids: Sequence[int]) -> tuple[int, int]:
    """Delete job versions (their aliases go with them) and, when none is left, the job;
    ended runs made from them keep their record without the link. Refused (StateConflict)
    when a run that has not ended was made from one, re-checked inside the transaction.
    Code snapshots no version points at any more go too. Returns (versions deleted,
    snapshot bytes freed)."""
    from launchctl.errors import StateConflict
    from launchctl.states import TERMINAL
    from launchctl.store.runs import sql_states

    marks = ", ".join("?" for _ in version_ids)
    with db.write():
        busy = db.one(
            f"SELECT id, state FROM runs WHERE job_version_id IN ({marks})"
            f" AND state NOT IN {sql_states(TERMINAL)} LIMIT 1",
            list(version_ids),
        )
        if busy is not None:
            raise StateConflict(f"run {busy['id']} is {busy['state']} and needs this job")
        db.execute(
            f"UPDATE runs SET job_version_id = NULL WHERE job_version_id IN ({marks})",
            list(version_ids),
        )
        cur = db.execute(f"DELETE FROM job_versions WHERE id IN ({marks})", list(version_ids))
        deleted = cur.rowcount
        db.execute(
            "DELETE FROM jobs WHERE id = ? AND NOT EXISTS"
            " (SELECT 1 FROM job_versions WHERE job_id = ?)",
            [job_id, job_id],
        )
        orphans = (
            "FROM snapshots WHERE digest NOT IN (SELECT json_extract(source, '$.snapshot')"
            " FROM job_versions WHERE json_extract(source, '$.snapshot') IS NOT NULL)"
        )
        row = db.one(f"SELECT COALESCE(SUM(size), 0) AS n {orphans}")
        db.execute(f"DELETE {orphans}")
    return deleted, int(row["n"]) if row else 0


def image_references(db: Database) -> list[Row]:
    """Every image a run or an image job of this store names, for ``images list`` and
    ``images prune`` (issue 12 item 6): the image a run used (``runs.image``) or asked for
    (``-d``, queued runs included), with the run's state and the job version it was made
    from (None once that version is deleted); and each image job version's image (no run).
    Columns: image, run_id, state, entity, name, version."""
    runs = db.all(
        "SELECT i.image, i.run_id, i.state, j.entity, j.name, v.version FROM ("
        " SELECT image, id AS run_id, state, job_version_id FROM runs WHERE image IS NOT NULL"
        " UNION SELECT json_extract(spec, '$.docker.docker_image'), id, state, job_version_id"
        " FROM runs WHERE json_extract(spec, '$.docker.docker_image') IS NOT NULL"
        ") AS i LEFT JOIN job_versions v ON v.id = i.job_version_id"
        " LEFT JOIN jobs j ON j.id = v.job_id"
    )
    jobs = db.all(
        "SELECT json_extract(v.source, '$.image') AS image, NULL AS run_id, NULL AS state,"
        " j.entity, j.name, v.version FROM job_versions v JOIN jobs j ON j.id = v.job_id"
        " WHERE j.source_type = 'image' AND json_extract(v.source, '$.image') IS NOT NULL"
    )
    return [dict(r) for r in runs + jobs]
