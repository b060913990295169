"""Developer sessions: tests, lint (ruff + mypy) and benchmarks.

nox -s tests            the whole suite (starts the services it needs)
nox -s lint             ruff and mypy
nox -s bench            benchmarks, written as a table to bench-results/
nox -s mutate           mutation testing of the modules that carry the guarantees (not by default)
nox -s dist             dist/launchctl (one file) and dist/wheelhouse/, for air-gapped labs
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
    paths = ("launchctl", "tests", "noxfile.py", "benchmarks", "scripts", "examples")
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)
    session.run("mypy")


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks against baselines (raw subprocess, task-spooler); prints and saves a table."""
    session.install("-e", ".[test]")
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session(default=False)
def dist(session: nox.Session) -> None:
    """One file and a wheelhouse for air-gapped labs (issue 17): scripts/dist.py, which
    tests/test_dist.py calls too; extra arguments go to it (nox -s dist -- --no-wheelhouse)."""
    session.run("python", "scripts/dist.py", *session.posargs)


# The modules `nox -s mutate` mutates by default: the ones that carry the README's
# guarantees (issue 19). The files and tests are configured under [tool.mutmut] in
# pyproject.toml; each mutant runs only the tests that cover its function.
MUTATE_MODULES = (
    "launchctl.states",
    "launchctl.variables",
    "launchctl.guardrails",
    "launchctl.store.runs",
    "launchctl.store.gpus",
    "launchctl.gpus.policy",
    "launchctl.runners.local_process",
    "launchctl.secrets",
    "launchctl.masking",
)


@nox.session(default=False)
def mutate(session: nox.Session) -> None:
    """Mutation testing with mutmut (nox -s mutate -- launchctl.states launchctl.guardrails).

    Runs in a copy of the working tree (tracked and untracked, not ignored files), so the
    mutants/ folder mutmut writes never lands in the checkout. Prints each surviving
    mutant's diff and the counts; states, variables and guardrails take about 3 minutes
    on 2 cores, the whole list longer (see the notes of issue 19).
    """
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    modules = session.posargs or list(MUTATE_MODULES)
    unknown = [m for m in modules if m not in MUTATE_MODULES]
    if unknown:
        session.error(f"not a module mutate covers: {unknown[0]} (see MUTATE_MODULES)")
    session.install("-e", ".[test]", "mutmut>=3.3")
    root = Path(__file__).parent
    files = subprocess.run(
        ["git", "ls-files", "-z", "-co", "--exclude-standard"],
        cwd=root,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    work = Path(tempfile.mkdtemp(prefix="launchctl-mutate-"))
    try:
        for name in filter(None, files):
            src = root / name.decode()
            if src.is_file() and not name.startswith(b"mutants/"):
                dst = work / name.decode()
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        with session.chdir(work):
            session.run("mutmut", "run", *(f"{m}.*" for m in modules))
            # `mutmut results` lists every mutant not killed, the unselected modules' too
            # ("not checked"): print the selected modules' survivors only.
            out = session.run("mutmut", "results", silent=True) or ""
            left = [
                line.strip()
                for line in str(out).splitlines()
                if "not checked" not in line and line.strip().startswith(tuple(modules))
            ]
            session.log(f"{len(left)} mutants not killed in {', '.join(modules)}")
            for line in left:
                session.log(line)
    finally:
        shutil.rmtree(work, ignore_errors=True)
