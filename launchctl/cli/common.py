"""Shared pieces of the CLI: opening the store (through the core), and shared options."""

from __future__ import annotations

import typer

from launchctl.service import open_store

__all__ = ["JSON_OPTION", "open_store"]

JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of a table.")
