"""Shared fixtures of the W&B compat cases (issue 11)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import cli


@pytest.fixture
def ready(home: Path) -> Path:
    """An isolated home whose store exists (``queue list`` creates it), so that
    ``table_counts`` taken before a refused command has something to compare."""
    cli("queue", "list", check=True)
    assert (home / "launchctl.db").exists()
    return home
