"""Developer sessions: tests, lint (ruff + mypy) and benchmarks.

nox -s tests            the whole suite (starts the services it needs)
nox -s lint             ruff and mypy
nox -s bench            benchmarks, written as a table to bench-results/
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite; extra arguments go to pytest (nox -s tests -- -k agent)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format check) and mypy over the package."""
    session.install("-e", ".[dev]")
    session.run("ruff", "check", "launchctl", "tests", "noxfile.py", "benchmarks")
    session.run("ruff", "format", "--check", "launchctl", "tests", "noxfile.py", "benchmarks")
    session.run("mypy")


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks against baselines (raw subprocess, task-spooler); prints and saves a table."""
    session.install("-e", ".[test]")
    session.run("python", "benchmarks/run.py", *session.posargs)
