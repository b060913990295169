"""SQL for jobs, their versions, and the code snapshots they point at."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from launchctl.errors import LaunchctlError, NotFound
from launchctl.store.db import Database, Row, dumps, loads


def _decode_version(row: Row | None) -> Row | None:
    if row is not None:
        row["source"] = loads(row["source"])
        row["entrypoint"] = loads(row["entrypoint"])
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
        snapshot: tuple[str, bytes, int] | None = None,
    ) -> tuple[Row, bool]:
        """Record a job version; the same digest gives back the existing version.

        Returns the version row (with the job's fields) and whether it is new.
        """
        now = time.time()
        with self.db.write():
            if snapshot is not None:  # the code, in the same transaction as its version
                digest_, data, files = snapshot
                self.db.execute(
                    "INSERT OR IGNORE INTO snapshots (digest, files, size, data, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [digest_, files, len(data), data, now],
                )
            job = self.db.one("SELECT * FROM jobs WHERE name = ?", [name])
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
                        f"job '{name}' is a {job['source_type']} job; pick another name"
                        f" (-n) for this {source_type} job"
                    )
                job_id = job["id"]
            existing = self.db.one(
                "SELECT version FROM job_versions WHERE job_id = ? AND digest = ?",
                [job_id, digest],
            )
            if existing is not None:
                created = False
                version = existing["version"]
            else:
                nxt = self.db.one(
                    "SELECT COALESCE(MAX(version) + 1, 0) AS v FROM job_versions WHERE job_id = ?",
                    [job_id],
                )
                version = nxt["v"] if nxt else 0
                try:
                    self.db.execute(
                        "INSERT INTO job_versions (job_id, version, digest, source, entrypoint,"
                        " dockerfile, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [
                            job_id,
                            version,
                            digest,
                            dumps(source),
                            dumps(entrypoint),
                            dockerfile,
                            now,
                        ],
                    )
                except sqlite3.IntegrityError as exc:  # pragma: no cover - guarded above
                    raise LaunchctlError(f"could not record job '{name}': {exc}") from None
                created = True
        return self.version(name, f"v{version}"), created

    _VERSION_SELECT = (
        "SELECT v.*, j.name, j.source_type, j.entity, j.project,"
        " (SELECT MAX(version) FROM job_versions WHERE job_id = j.id) AS latest"
        " FROM job_versions v JOIN jobs j ON j.id = v.job_id"
    )

    def version(self, name: str, alias: str = "latest") -> Row:
        """A job version by alias: ``latest`` or ``vN``."""
        job = self.db.one("SELECT id FROM jobs WHERE name = ?", [name])
        if job is None:
            raise NotFound(f"job '{name}' does not exist (see `launchctl job list`)")
        if alias == "latest":
            where, params = "j.id = ? ORDER BY v.version DESC LIMIT 1", [job["id"]]
        elif alias.startswith("v") and alias[1:].isdigit():
            where, params = "j.id = ? AND v.version = ?", [job["id"], int(alias[1:])]
        else:
            raise LaunchctlError(f"unknown alias '{alias}' for job '{name}': use latest or vN")
        row = _decode_version(self.db.one(f"{self._VERSION_SELECT} WHERE {where}", params))
        if row is None:
            raise NotFound(f"job '{name}' has no version {alias}")
        return row

    def version_by_id(self, version_id: int) -> Row:
        row = _decode_version(self.db.one(f"{self._VERSION_SELECT} WHERE v.id = ?", [version_id]))
        if row is None:
            raise NotFound(f"job version {version_id} does not exist")
        return row

    def versions(self, name: str) -> list[Row]:
        rows = self.db.all(f"{self._VERSION_SELECT} WHERE j.name = ? ORDER BY v.version", [name])
        return [r for r in (_decode_version(row) for row in rows) if r is not None]

    def all(self) -> list[Row]:
        return self.db.all(
            "SELECT j.*, MAX(v.version) AS latest, COUNT(v.id) AS versions"
            " FROM jobs j LEFT JOIN job_versions v ON v.job_id = j.id"
            " GROUP BY j.id ORDER BY j.name"
        )
