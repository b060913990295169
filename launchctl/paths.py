"""Where launchctl keeps its state: ``$LAUNCHCTL_HOME`` or the platform's user data dir."""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "LAUNCHCTL_HOME"


def home() -> Path:
    """The folder that holds the database, run logs and run working copies."""
    value = os.environ.get(ENV_HOME)
    if value:
        return Path(value).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("launchctl", appauthor=False))


def db_path(root: Path | None = None) -> Path:
    return (root or home()) / "launchctl.db"


def run_dir(run_id: str, root: Path | None = None) -> Path:
    """One folder per run, beside the database: its log and its working copy."""
    return (root or home()) / "runs" / run_id


def user_path(value: str) -> Path:
    """A path the user typed, with ``~`` expanded where it names a known user."""
    try:
        return Path(value).expanduser()
    except (RuntimeError, ValueError):  # ~nosuchuser, or a name the OS refuses
        return Path(value)
