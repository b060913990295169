"""Where a front end gets its store: the CLI (and any later front end) opens it here.

Front ends (``launchctl/cli``, and later a sync client or a web view) hold the store only
to hand it back to the core's functions (``launchctl.runs``, ``queues``, ``jobs``,
``teams``, ``launch``, ``follow``...); they never import ``launchctl.store`` nor read its
tables. ``tests/test_architecture.py`` keeps that rule.
"""

from __future__ import annotations

from pathlib import Path

from launchctl.store import Store


def open_store(root: Path | None = None) -> Store:
    """The store under ``root`` (default ``$LAUNCHCTL_HOME``), migrated on open."""
    return Store(root)


def another_connection(store: Store) -> Store:
    """A second handle on the same store, for another thread (a connection is per thread)."""
    return Store(store.root)
