"""SQL for sync cursors (migration m009): what one W&B server has of one run.

A cursor is keyed by (run, base URL, entity, project): syncing the same run to another
server, entity or project starts a new one. It records the fingerprint of the last
``UpsertBucket`` the server acknowledged, how many log lines (and the bytes they covered)
its ``file_stream`` has, the fingerprint of the summary sent, and whether the metadata
file and the final ``complete`` went out. Each field is written only after the server
acknowledged that piece, so a sync cut anywhere resumes where it stopped. No policy here:
which runs are synced and how they map to W&B is ``launchctl.sync.runs_push``'s.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from launchctl.states import TERMINAL, State, ordered
from launchctl.store.db import Database, Row
from launchctl.store.runs import _decode

# Fields of a cursor a sync may advance.
CURSOR_FIELDS = frozenset(
    {"upserted", "log_lines", "log_bytes", "summary", "metadata_sent", "completed",
     "remote_url", "last_error"}
)  # fmt: skip

_TERMINAL_SQL = ", ".join(f"'{s.value}'" for s in ordered(TERMINAL))


def candidates(
    db: Database,
    *,
    user: str,
    base_url: str,
    entity: str | None = None,
    project: str | None = None,
    since: float | None = None,
    run_ids: Iterable[str] | None = None,
) -> list[Row]:
    """The runs a sync of ``user`` may send, oldest first, each with its cursor on this
    server (``c_*`` columns, NULL when the server has nothing of it yet).

    Only runs of entities ``user`` is a member of; only runs that ever ran or that an agent
    took and ended (a run cancelled while it waited has nothing to show). ``entity`` and
    ``project`` override where every run goes (None: the run's own); ``since`` compares the
    creation time. Each row also has ``first_running_at`` (when its first attempt ran),
    ``host`` (the host of the agent that first ran it, if known) and ``target_entity`` /
    ``target_project``.
    """
    where = ["r.entity IN (SELECT m.entity FROM members m WHERE m.user = :user)"]
    params: dict[str, Any] = {"user": user, "base_url": base_url, "entity": entity,
                              "project": project}  # fmt: skip
    if since is not None:
        where.append("r.created_at >= :since")
        params["since"] = since
    if run_ids is not None:
        ids = list(run_ids)
        if not ids:
            return []
        marks = ", ".join(f":id{n}" for n in range(len(ids)))
        where.append(f"r.id IN ({marks})")
        params.update({f"id{n}": run_id for n, run_id in enumerate(ids)})
    sql = f"""
        SELECT * FROM (
          SELECT r.*,
            COALESCE(:entity, r.entity) AS target_entity,
            COALESCE(:project, r.project) AS target_project,
            (SELECT MIN(e.at) FROM events e
              WHERE e.run_id = r.id AND e.to_state = '{State.RUNNING.value}') AS first_running_at,
            (SELECT a.host FROM events e JOIN agents a ON a.id = e.agent_id
              WHERE e.run_id = r.id AND e.to_state IN ('{State.CLAIMED.value}',
                '{State.RUNNING.value}') ORDER BY e.id LIMIT 1) AS host,
            EXISTS (SELECT 1 FROM events e WHERE e.run_id = r.id
              AND e.to_state = '{State.CLAIMED.value}') AS was_claimed,
            c.upserted AS c_upserted, c.log_lines AS c_log_lines, c.log_bytes AS c_log_bytes,
            c.summary AS c_summary, c.metadata_sent AS c_metadata_sent,
            c.completed AS c_completed, c.remote_url AS c_remote_url,
            c.last_error AS c_last_error
          FROM runs r
          LEFT JOIN sync_cursors c ON c.run_id = r.id AND c.base_url = :base_url
            AND c.entity = COALESCE(:entity, r.entity)
            AND c.project = COALESCE(:project, r.project)
          WHERE {" AND ".join(where)}
        )
        WHERE first_running_at IS NOT NULL OR (state IN ({_TERMINAL_SQL}) AND was_claimed)
        ORDER BY seq
    """
    rows = []
    for row in db.all(sql, params):
        decoded = _decode(row)
        if decoded is not None:
            rows.append(decoded)
    return rows


def cursor(db: Database, run_id: str, base_url: str, entity: str, project: str) -> Row | None:
    return db.one(
        "SELECT * FROM sync_cursors WHERE run_id = ? AND base_url = ? AND entity = ?"
        " AND project = ?",
        [run_id, base_url, entity, project],
    )


def advance(
    db: Database, run_id: str, base_url: str, entity: str, project: str, **fields: Any
) -> None:
    """Record what the server acknowledged for a run: create its cursor or update the
    given fields only."""
    unknown = set(fields) - CURSOR_FIELDS
    if unknown:
        raise ValueError(f"not cursor fields: {sorted(unknown)}")
    row = {"run_id": run_id, "base_url": base_url, "entity": entity, "project": project,
           **fields, "updated_at": time.time()}  # fmt: skip
    cols = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    sets = ", ".join(f"{k} = excluded.{k}" for k in [*fields, "updated_at"])
    with db.write():
        db.execute(
            f"INSERT INTO sync_cursors ({cols}) VALUES ({marks})"
            f" ON CONFLICT (run_id, base_url, entity, project) DO UPDATE SET {sets}",
            list(row.values()),
        )


def cursors(db: Database, run_id: str) -> list[Row]:
    """Every server's cursor of one run."""
    return db.all(
        "SELECT * FROM sync_cursors WHERE run_id = ? ORDER BY base_url, entity, project",
        [run_id],
    )
