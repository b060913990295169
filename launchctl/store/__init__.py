"""The store: the only code that speaks SQL. One SQLite file under ``$LAUNCHCTL_HOME``."""

from __future__ import annotations

from pathlib import Path

from launchctl import paths
from launchctl.store.agents import AgentTable
from launchctl.store.arrays import ArrayTable
from launchctl.store.db import Database, Row, dumps, loads
from launchctl.store.gpus import GpuTable
from launchctl.store.jobs import JobTable
from launchctl.store.queues import QueueTable
from launchctl.store.runs import RunTable
from launchctl.store.teams import TeamTable


class Store:
    """The database and the folder beside it, with one accessor per table."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or paths.home()
        self.db = Database(paths.db_path(self.root))
        self.queues = QueueTable(self.db)
        self.jobs = JobTable(self.db)
        self.runs = RunTable(self.db)
        self.agents = AgentTable(self.db)
        self.teams = TeamTable(self.db)
        self.gpus = GpuTable(self.db)
        self.arrays = ArrayTable(self.db)  # issue 18: launch --array

    def run_dir(self, run_id: str) -> Path:
        return paths.run_dir(run_id, self.root)

    def close(self) -> None:
        self.db.close()


__all__ = ["Database", "Row", "Store", "dumps", "loads"]
