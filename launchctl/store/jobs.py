"""SQL for jobs, their versions, and the code snapshots they point at."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

from launchctl.errors import LaunchctlError, NotFound
from launchctl.store.db import Database, Row, dumps, loads


def _decode_version(row: Row | None) -> Row | None:
    if row is not None:
        row["source"] = loads(row["source"])
        row["entrypoint"] = loads(row["entrypoint"])
        if "metadata" in row:
            row["metadata"] = loads(row["metadata"] or "{}")
        if "aliases" in row:
            row["aliases"] = loads(row["aliases"] or "[]")
    return row


class JobTable:
    def __init__(self, db: Database) -> None:
        self.db = db

    def snapshot(self, digest: str) -> bytes:
        row = self.db.one("SELECT data FROM snapshots WHERE digest = ?", [digest])
        if row is None:
            raise NotFound(f"code snapshot {digest[:12]} is missing from the store")
        return bytes(row["data"])

    def add_version(
        self,
        *,
        name: str,
        source_type: str,
        entity: str,
        project: str,
        digest: str,
        source: dict[str, Any],
        entrypoint: list[str],
        dockerfile: str | None,
        author: str,
        authorize: Callable[[Row | None], object] | None = None,
        snapshot: tuple[str, bytes, int] | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        aliases: list[str] | tuple[str, ...] = (),
    ) -> tuple[Row, bool]:
        """Record a version of job ``entity/name`` written by ``author``; the same digest
        gives back the existing version.

        ``authorize(job)`` runs inside the write transaction, before anything is written,
        with the job's row (None when the job is new): a permission checked is a permission
        still held when the version commits. An existing version with no recorded author
        (made before authors were recorded) takes ``author``, who vouches for its content.

        ``description`` and ``metadata`` (W&B's runtime, build context, base image...) go
        with a new version; a description given again for an existing version replaces its
        own. ``aliases``: the job's own aliases (``wandb job create -a``), each moved to this
        version as W&B moves an artifact alias.

        Returns the version row (with the job's fields) and whether it is new.
        """
        now = time.time()
        with self.db.write():
            job = self.db.one("SELECT * FROM jobs WHERE entity = ? AND name = ?", [entity, name])
            if authorize is not None:
                authorize(job)
            if snapshot is not None:  # the code, in the same transaction as its version
                digest_, data, files = snapshot
                self.db.execute(
                    "INSERT OR IGNORE INTO snapshots (digest, files, size, data, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [digest_, files, len(data), data, now],
                )
            if job is None:
                cur = self.db.execute(
                    "INSERT INTO jobs (name, source_type, entity, project, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [name, source_type, entity, project, now],
                )
                job_id = cur.lastrowid
            else:
                if job["source_type"] != source_type:
                    raise LaunchctlError(
                        f"job '{entity}/{name}' is a {job['source_type']} job; pick another"
                        f" name (-n) for this {source_type} job"
                    )
                job_id = job["id"]
            existing = self.db.one(
                "SELECT id, version, author FROM job_versions WHERE job_id = ? AND digest = ?",
                [job_id, digest],
            )
            if existing is not None:
                created = False
                version = existing["version"]
                if existing["author"] is None:
                    self.db.execute(
                        "UPDATE job_versions SET author = ? WHERE id = ? AND author IS NULL",
                        [author, existing["id"]],
                    )
                if description is not None:
                    self.db.execute(
                        "UPDATE job_versions SET description = ? WHERE id = ?",
                        [description, existing["id"]],
                    )
                version_id = existing["id"]
            else:
                nxt = self.db.one(
                    "SELECT COALESCE(MAX(version) + 1, 0) AS v FROM job_versions WHERE job_id = ?",
                    [job_id],
                )
                version = nxt["v"] if nxt else 0
                try:
                    cur = self.db.execute(
                        "INSERT INTO job_versions (job_id, version, digest, source, entrypoint,"
                        " dockerfile, author, created_at, description, metadata)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [
                            job_id,
                            version,
                            digest,
                            dumps(source),
                            dumps(entrypoint),
                            dockerfile,
                            author,
                            now,
                            description,
                            dumps(metadata or {}),
                        ],
                    )
                    version_id = cur.lastrowid
                except sqlite3.IntegrityError as exc:  # pragma: no cover - guarded above
                    raise LaunchctlError(f"could not record job '{name}': {exc}") from None
                created = True
            for alias in dict.fromkeys(aliases):
                self.db.execute(
                    "INSERT INTO job_aliases (job_id, alias, version_id, created_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (job_id, alias) DO UPDATE SET"
                    " version_id = excluded.version_id, created_at = excluded.created_at",
                    [job_id, alias, version_id, now],
                )
        return self.version(name, f"v{version}", entity=entity), created

    _VERSION_SELECT = (
        "SELECT v.*, j.name, j.source_type, j.entity, j.project,"
        " (SELECT MAX(version) FROM job_versions WHERE job_id = j.id) AS latest,"
        " (SELECT json_group_array(alias) FROM (SELECT alias FROM job_aliases"
        "  WHERE version_id = v.id ORDER BY alias)) AS aliases"
        " FROM job_versions v JOIN jobs j ON j.id = v.job_id"
    )

    def entities_with(self, name: str) -> list[str]:
        """The entities that have a job called ``name``, by name."""
        rows = self.db.all("SELECT entity FROM jobs WHERE name = ? ORDER BY entity", [name])
        return [str(r["entity"]) for r in rows]

    def _job_id(self, name: str, entity: str | None) -> int:
        if entity is not None:
            job = self.db.one("SELECT id FROM jobs WHERE entity = ? AND name = ?", [entity, name])
            if job is not None:
                return int(job["id"])
            others = self.entities_with(name)
            hint = (
                f" (a job of that name is in: {', '.join(others)}; name one as ENTITY/NAME,"
                f" e.g. {others[0]}/{name})"
                if others
                else " (see `launchctl job list`)"
            )
            raise NotFound(f"job '{name}' does not exist in entity '{entity}'{hint}")
        found = self.entities_with(name)
        if not found:
            raise NotFound(f"job '{name}' does not exist (see `launchctl job list`)")
        if len(found) > 1:
            raise LaunchctlError(
                f"job name '{name}' is used in several entities ({', '.join(found)}):"
                f" name one as ENTITY/NAME, e.g. {found[0]}/{name}"
            )
        return self._job_id(name, found[0])

    def version(self, name: str, alias: str = "latest", *, entity: str | None = None) -> Row:
        """A version of job ``entity/name`` by alias: ``latest``, ``vN`` or one of the
        job's own aliases (``job create -a``).

        Without ``entity``, the one job of that name in the store (refused when several
        entities have one).
        """
        job_id = self._job_id(name, entity)
        params: list[Any]
        if alias == "latest":
            where, params = "j.id = ? ORDER BY v.version DESC LIMIT 1", [job_id]
        elif alias.startswith("v") and alias[1:].isdigit():
            where, params = "j.id = ? AND v.version = ?", [job_id, int(alias[1:])]
        else:
            where = "j.id = ? AND v.id = (SELECT version_id FROM job_aliases"
            where += " WHERE job_id = ? AND alias = ?)"
            params = [job_id, job_id, alias]
        row = _decode_version(self.db.one(f"{self._VERSION_SELECT} WHERE {where}", params))
        if row is None:
            where_ = f" in entity '{entity}'" if entity is not None else ""
            if alias == "latest" or (alias.startswith("v") and alias[1:].isdigit()):
                raise NotFound(f"job '{name}' has no version {alias}{where_}")
            raise NotFound(
                f"job '{name}' has no alias '{alias}'{where_} (aliases: latest, vN, and those"
                " given with `job create -a`)"
            )
        return row

    def version_by_id(self, version_id: int) -> Row:
        row = _decode_version(
            self.db.one_kept(f"{self._VERSION_SELECT} WHERE v.id = ?", [version_id])
        )
        if row is None:
            raise NotFound(f"job version {version_id} does not exist")
        return row

    def versions(self, job_id: int) -> list[Row]:
        """Every version of one job (by the job's id), oldest first."""
        rows = self.db.all(f"{self._VERSION_SELECT} WHERE j.id = ? ORDER BY v.version", [job_id])
        return [r for r in (_decode_version(row) for row in rows) if r is not None]

    def aliases(self, job_id: int) -> dict[str, str]:
        """A job's own aliases and the version each names (``vN``)."""
        rows = self.db.all(
            "SELECT a.alias, v.version FROM job_aliases a JOIN job_versions v"
            " ON v.id = a.version_id WHERE a.job_id = ? ORDER BY a.alias",
            [job_id],
        )
        return {str(r["alias"]): f"v{r['version']}" for r in rows}

    def all(self) -> list[Row]:
        return self.db.all(
            "SELECT j.*, MAX(v.version) AS latest, COUNT(v.id) AS versions"
            " FROM jobs j LEFT JOIN job_versions v ON v.job_id = j.id"
            " GROUP BY j.id ORDER BY j.name, j.entity"
        )
