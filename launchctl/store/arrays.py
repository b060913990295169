"""SQL for job arrays (issue 18): the runs of one ``launch --array``, written in one
transaction, and read back by array.

An array has no table of its own: its runs carry ``array_id``, ``array_index`` and
``array_limit`` (migration m013), and every claim counts the array's runs in flight
(``launchctl.store.runs.ARRAY_OK``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from launchctl.errors import NotFound, StateConflict
from launchctl.store.db import Database, Row
from launchctl.store.runs import DEP_KINDS, _decode, insert_queued


class ArrayTable:
    def __init__(self, db: Database) -> None:
        self.db = db

    def insert(self, runs: list[dict[str, Any]], *, first_reruns: bool = False) -> list[Row]:
        """Store every run of an array as ``queued``, in ONE transaction: when any of them
        cannot be written (a dependency deleted since the launch checked it; with
        ``first_reruns``, an original that got a rerun meanwhile) none is. Returns the
        runs in the order given."""
        now = time.time()
        checked: set[str] = set()
        with self.db.write():
            for run in runs:
                run = dict(run)
                after: list[tuple[str, str]] = list(run.pop("after", None) or [])
                for dep_id, kind in after:
                    if kind not in DEP_KINDS:
                        raise ValueError(f"unknown dependency kind {kind!r}")
                    if dep_id not in checked:
                        if self.db.one("SELECT 1 AS x FROM runs WHERE id = ?", [dep_id]) is None:
                            raise NotFound(
                                f"run '{dep_id}' does not exist (see `launchctl runs list`)"
                            )
                        checked.add(dep_id)
                again = first_reruns and run.get("rerun_of")
                if again and self.db.one("SELECT 1 FROM runs WHERE rerun_of = ?", [again]):
                    raise StateConflict(
                        f"run {again} was rerun by another command just now; nothing was queued"
                    )
                insert_queued(self.db, run, now, after=after)
        return self.runs_by_id(r["id"] for r in runs)

    def resolve(self, given: str) -> str:
        """The full id of the array ``given`` names: its id, or a unique prefix of it."""
        rows = self.db.all(
            "SELECT DISTINCT array_id FROM runs WHERE array_id IS NOT NULL"
            " AND substr(array_id, 1, ?) = ? LIMIT 2",
            [len(given), given],
        )
        exact = [r for r in rows if r["array_id"] == given]
        if exact or len(rows) == 1:
            return str((exact or rows)[0]["array_id"])
        if rows:
            raise NotFound(f"array id '{given}' is ambiguous: give more of it")
        raise NotFound(f"array '{given}' does not exist (see `launchctl runs list`)")

    def runs(self, array_id: str, *, states: Iterable[str] = ()) -> list[Row]:
        """The runs of one array, by index (only those in ``states``, when given)."""
        wanted = list(states)
        where = ""
        if wanted:
            where = f" AND state IN ({', '.join('?' for _ in wanted)})"
        rows = self.db.all(
            f"SELECT * FROM runs WHERE array_id = ?{where} ORDER BY array_index, seq",
            [array_id, *wanted],
        )
        return [r for r in (_decode(row) for row in rows) if r is not None]

    def runs_by_id(self, run_ids: Iterable[str]) -> list[Row]:
        """Runs by id, in the order given (those that exist)."""
        ids = list(run_ids)
        found: dict[str, Row] = {}
        for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
            chunk = ids[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            for row in self.db.all(f"SELECT * FROM runs WHERE id IN ({marks})", chunk):
                decoded = _decode(row)
                if decoded is not None:
                    found[str(decoded["id"])] = decoded
        return [found[i] for i in ids if i in found]
