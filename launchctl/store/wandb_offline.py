"""SQL for a run's own ``wandb/offline-run-*`` folders that W&B's ``wandb sync`` uploaded
(table ``wandb_offline_syncs``, migration m009): one row per run, server and folder, with
the W&B run (``entity/project/run_id``) the folder became."""

from __future__ import annotations

import time
from collections.abc import Iterable

from launchctl.store.db import Database, Row


class WandbOfflineTable:
    def __init__(self, db: Database) -> None:
        self.db = db

    def synced(self, run_id: str, base_url: str) -> set[str]:
        """The folders (relative to the run's folder) this server already has."""
        rows = self.db.all(
            "SELECT folder FROM wandb_offline_syncs WHERE run_id = ? AND base_url = ?",
            [run_id, base_url],
        )
        return {str(r["folder"]) for r in rows}

    def record(self, run_id: str, base_url: str, folder: str, wandb_run_path: str | None) -> None:
        """``folder`` of ``run_id`` is on ``base_url`` now, as the W&B run ``wandb_run_path``."""
        with self.db.write():
            self.db.execute(
                "INSERT INTO wandb_offline_syncs (run_id, base_url, folder, wandb_run_path,"
                " synced_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id, base_url, folder) DO UPDATE SET"
                " wandb_run_path = excluded.wandb_run_path, synced_at = excluded.synced_at",
                [run_id, base_url, folder, wandb_run_path, time.time()],
            )

    def for_run(self, run_id: str) -> list[Row]:
        """Every upload of this run's folders, oldest first (for ``runs show``)."""
        return self.db.all(
            "SELECT base_url, folder, wandb_run_path, synced_at FROM wandb_offline_syncs"
            " WHERE run_id = ? ORDER BY synced_at, folder",
            [run_id],
        )

    def finished_runs(self, states: Iterable[str], since: float | None = None) -> list[Row]:
        """Runs in ``states`` that had a working copy: the only ones a folder can be in.
        Oldest first, so a long backlog goes out in the order it was made."""
        states = list(states)
        sql = (
            "SELECT * FROM runs WHERE workdir IS NOT NULL"
            f" AND state IN ({', '.join('?' for _ in states)})"
        )
        params: list[object] = list(states)
        if since is not None:
            sql += " AND created_at >= ?"
            params.append(since)
        return self.db.all(sql + " ORDER BY seq", params)
