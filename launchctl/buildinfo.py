"""How this launchctl was built, for ``launchctl --version`` (issue 17).

A pip install (from an index or the wheelhouse) says ``pip``. The single file that
``nox -s dist`` builds (scripts/dist.py) carries a generated module, ``launchctl._build``,
that says when and from which commit it was built; it never exists in the source tree.
"""

from __future__ import annotations

import importlib
import platform

from launchctl import __version__


def how_built() -> str:
    """``zipapp built 2026-11-26 from 13dd04a`` for the single file, else ``pip``."""
    try:
        generated = importlib.import_module("launchctl._build")
    except ImportError:
        return "pip"
    return str(getattr(generated, "DESCRIPTION", "zipapp"))


def version_line() -> str:
    """``launchctl 0.1.0 (pip, python 3.11.7)``: the version, how it was built, the Python."""
    return f"launchctl {__version__} ({how_built()}, python {platform.python_version()})"
