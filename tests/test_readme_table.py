"""The README's "What happens when things go wrong" table names the test behind each promise:
each named test must exist and be collected, so a renamed or deleted test cannot leave a
promise standing on nothing.

In the table's last column a name is ``file.py::test``; ``::test`` is in the file named
last before it (in that row or a row above); a folder (``tests/fuzz/``) must hold tests.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SECTION = "## What happens when things go wrong"
HEADER = ["what happens", "what launchctl does", "test"]


def table_rows(text: str) -> list[list[str]]:
    """The cells of each row of the first table under SECTION (header and rule left out)."""
    _, found, rest = text.partition(f"\n{SECTION}\n")
    assert found, f"README.md has no section {SECTION!r}"
    body = re.split(r"\n## ", rest, maxsplit=1)[0]
    lines = [ln for ln in body.splitlines() if ln.startswith("|")]
    rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]
    assert rows and rows[0] == HEADER, f"the table's header is not {HEADER}: {rows[:1]}"
    assert rows[1:] and set("".join(rows[1])) <= set("- "), "the table has no rule line"
    return rows[2:]


def named_tests(text: str) -> list[tuple[str, str]]:
    """(the row's first cell, a pytest node id or a folder under ROOT) for every name."""
    out: list[tuple[str, str]] = []
    current: str | None = None
    for cells in table_rows(text):
        assert len(cells) == 3, f"a row of the table does not have 3 cells: {cells}"
        what, names = cells[0], re.findall(r"`([^`]+)`", cells[2])
        assert names, f"the row {what!r} names no test"
        for name in names:
            if name.endswith("/"):
                out.append((what, name))
                continue
            file, sep, test = name.partition("::")
            assert sep and test, f"row {what!r}: {name!r} is not file.py::test or ::test"
            if file:
                current = file if file.startswith("tests/") else f"tests/{file}"
            assert current is not None, f"row {what!r}: {name!r} follows no file name"
            out.append((what, f"{current}::{test}"))
    return out


def collected(paths: list[str]) -> set[str]:
    """The node ids pytest collects from these files and folders (parameters left off)."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         *paths],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    ids = {ln.split("[", 1)[0] for ln in done.stdout.splitlines() if "::" in ln}
    assert ids, f"pytest collected nothing from {paths}:\n{done.stdout[-2000:]}{done.stderr}"
    return ids


def missing(names: list[tuple[str, str]]) -> list[str]:
    """The names that exist nowhere or are not collected, with their row."""
    files = sorted({n.split("::", 1)[0] for _, n in names})
    absent = [f for f in files if not (ROOT / f).exists()]
    ids = collected([f for f in files if f not in absent]) if len(absent) < len(files) else set()
    out = []
    for what, name in names:
        folder = name.endswith("/")
        if not (any(i.startswith(name) for i in ids) if folder else name in ids):
            out.append(f"{what!r}: {name}")
    return out


def test_every_test_the_readme_table_names_exists_and_is_collected() -> None:
    names = named_tests(README.read_text())
    rows = {what for what, _ in names}
    assert len(rows) >= 17, f"the table lost rows: {sorted(rows)}"
    assert missing(names) == []


TABLE = f"""intro

{SECTION}

| what happens | what launchctl does | test |
| --- | --- | --- |
| a run fails | failed | `test_agent.py::test_one_failing_run_never_stops_the_agent` |
| renamed | gone | `::test_no_such_test_anywhere`, `test_nowhere.py::test_x` |
| a folder | fuzz | `tests/fuzz/` |
| an empty folder | none | `tests/no_such_folder/` |

## Next
| not | this | table |
"""


def test_the_check_finds_a_test_that_is_gone() -> None:
    names = named_tests(TABLE)
    assert names == [
        ("a run fails", "tests/test_agent.py::test_one_failing_run_never_stops_the_agent"),
        ("renamed", "tests/test_agent.py::test_no_such_test_anywhere"),
        ("renamed", "tests/test_nowhere.py::test_x"),
        ("a folder", "tests/fuzz/"),
        ("an empty folder", "tests/no_such_folder/"),
    ]
    assert missing(names) == [
        "'renamed': tests/test_agent.py::test_no_such_test_anywhere",
        "'renamed': tests/test_nowhere.py::test_x",
        "'an empty folder': tests/no_such_folder/",
    ]


@pytest.mark.parametrize(
    ("table", "said"),
    [
        ("| a | b |\n| --- | --- |\n", "header"),
        ("| what happens | what launchctl does | test |\n| --- | --- | --- |\n| x | y | z |\n",
         "names no test"),
        ("| what happens | what launchctl does | test |\n| --- | --- | --- |\n| x | y | `::t` |\n",
         "follows no file name"),
    ],
)  # fmt: skip
def test_a_table_the_check_cannot_read_fails_it(table: str, said: str) -> None:
    with pytest.raises(AssertionError, match=said):
        named_tests(f"\n{SECTION}\n\n{table}")
