"""Shared pieces of the CLI: opening the store, and shared options."""

from __future__ import annotations

import typer

from launchctl.store import Store

JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of a table.")


def open_store() -> Store:
    return Store()
