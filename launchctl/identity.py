"""Who is acting: the OS user, or ``LAUNCHCTL_USER`` for an agent run as a service account."""

from __future__ import annotations

import getpass
import os


def current_user() -> str:
    return os.environ.get("LAUNCHCTL_USER") or getpass.getuser()


def default_entity() -> str:
    """The entity (team) that owns things nobody named an owner for: the user's own."""
    return current_user()
