"""The benchmarks (benchmarks/run.py and its modules) still start and still find what they use.

The benchmarks themselves take minutes and are run by hand (``nox -s bench``); these checks
are quick: the entry point parses its options (so every module it imports loads), the table
renders, and every launchctl name a benchmark imports inside a function still exists.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest

from tests.conftest import ROOT

BENCHMARKS = ROOT / "benchmarks"


def test_the_entry_point_loads_its_modules_and_parses_its_options() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "run.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--quick" in proc.stdout and "--out" in proc.stdout, proc.stdout


@pytest.fixture
def report_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """benchmarks/report.py, imported as the entry point imports it; unloaded afterwards."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    before = set(sys.modules)
    try:
        yield importlib.import_module("report")
    finally:
        for name in set(sys.modules) - before:
            del sys.modules[name]


def test_the_table_has_a_header_a_line_per_row_and_the_notes(report_module: ModuleType) -> None:
    report = report_module.Report()
    report.rows.append(
        report_module.Row("startup", "0.100 s", "0.020 s", "py", "+0.080 s", "<", "yes")
    )
    report.notes.append("a note")
    lines = report_module.render(report).splitlines()
    assert lines[0].startswith("| benchmark | launchctl | baseline |"), lines
    assert lines[2] == "| startup | 0.100 s | 0.020 s | py | +0.080 s | < | yes |", lines
    assert lines[-1] == "- a note", lines


def _launchctl_imports() -> list[tuple[str, str, str]]:
    """(benchmark file, module, name) for every ``from launchctl... import name``."""
    found = []
    for path in sorted(BENCHMARKS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("launchctl"):
                found += [(path.name, node.module or "", alias.name) for alias in node.names]
    return found


def test_every_launchctl_name_the_benchmarks_import_exists() -> None:
    imports = _launchctl_imports()
    assert imports, "the benchmarks import nothing from launchctl: is this check looking?"
    missing = []
    for file, module, name in imports:
        try:
            loaded = importlib.import_module(module)
        except ImportError:
            missing.append(f"{file}: {module}")
            continue
        if not hasattr(loaded, name):
            try:  # a submodule: from launchctl import jobs
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"{file}: {module}.{name}")
    assert not missing, f"benchmarks import names launchctl no longer has: {missing}"


def test_the_dependency_chain_benchmark_measures_a_real_chain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bench_deps (issue 18) on a chain of 3 ``--after-ok`` runs: one gap per link, each a
    dependent's own start after its dependency's own end, never before it."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    before = set(sys.modules)
    try:
        bench_deps = importlib.import_module("bench_deps")
        gaps = bench_deps.launchctl_chain(3)["gaps_s"]
        report = importlib.import_module("report").Report()
        bench_deps.add_deps_rows(report, 3, 1, gaps, [])
    finally:  # the benchmarks' own modules; launchctl's stay (other tests hold them)
        for name in set(sys.modules) - before:
            if name.split(".")[0] != "launchctl":
                del sys.modules[name]
    assert len(gaps) == 3 and all(0 <= gap < 60 for gap in gaps), gaps
    assert report.rows[0].benchmark.startswith("deps: a dependency ends"), report.rows
    assert report.raw["deps"]["launchctl_gaps_s"] == gaps
