"""The fuzz tests' harness: ``launchctl`` run in this process, and what must hold after it.

``run_cli`` runs ``main()`` in-process (a subprocess costs ~0.2 s), in a fresh thread (so
deep-nesting inputs meet the same recursion depth as in a real process), with stdout and
stderr as a real process has them; ``test_harness.py`` checks that shortcut against real
subprocesses. ``check`` runs one command and asserts the property (see ``tests/fuzz``'s
docstring); the success checks below verify what a command that exited 0 reports.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sqlite3
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis.control import currently_in_test_context

from launchctl.cli import main
from launchctl.configfile import load_mapping
from launchctl.store import Store
from tests.conftest import EXAMPLES, table_counts

HELLO = str(EXAMPLES / "hello")
ERROR_PREFIX = "launchctl: error: "
# A group given no command prints its help (exit 2), as `launchctl queue` does.
CLICK_HELP = re.compile(
    r"Usage: launchctl [^\n]*\n\n(?!Error: ).*\n(?:Options|Commands):\n.*", re.S
)
# Examples per fuzz test; LAUNCHCTL_FUZZ_EXAMPLES=3000 fuzzes deeper (minutes, not seconds).
EXAMPLES_PER_TEST = int(os.environ.get("LAUNCHCTL_FUZZ_EXAMPLES", "120"))
SETTINGS = settings(
    max_examples=EXAMPLES_PER_TEST,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SEED_QUEUE_CONFIG = {
    "resource_args": {"local-process": {"env": {"SIZE": "size-{{size}}", "N": "{{n}}"}}},
    "template_variables": {
        "size": {"type": "string", "enum": ["small", "large"], "default": "small"},
        "n": {"type": "integer", "minimum": 1, "maximum": 4, "default": 1},
    },
    "ceilings": {"cpus": 4, "memory": "16g", "max_run_time": "12h"},
}


# -- the in-process runner -----------------------------------------------------------------
@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    code: int
    out: str
    err: str
    escaped: str | None  # the traceback of an exception that got out of main(), if any

    def __str__(self) -> str:
        shown = " ".join(repr(a) if len(a) < 200 else f"<{len(a)} chars>" for a in self.argv)
        return f"launchctl {shown}\n-> exit {self.code}\nstdout: {self.out!r:.500}\nstderr: " + (
            self.escaped or repr(self.err)[:2000]
        )


def run_cli(*args: str) -> Result:
    """``launchctl ARGS`` in this process: main() with sys.argv, stdout and stderr patched."""
    out_bytes, err_bytes = io.BytesIO(), io.BytesIO()
    # What a real process has under a UTF-8 locale: stdout strict, stderr backslashreplace.
    out = io.TextIOWrapper(out_bytes, encoding="utf-8", errors="strict", write_through=True)
    err = io.TextIOWrapper(
        err_bytes, encoding="utf-8", errors="backslashreplace", write_through=True
    )
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            main()
        except SystemExit as exc:
            box["code"] = exc.code
        except BaseException:
            box["escaped"] = traceback.format_exc()
        else:
            box["code"] = 0

    saved = sys.argv, sys.stdout, sys.stderr
    sys.argv, sys.stdout, sys.stderr = ["launchctl", *args], out, err
    try:
        # A fresh thread: the recursion depth a real process starts main() with.
        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
    finally:
        sys.argv, sys.stdout, sys.stderr = saved
    code = box.get("code", 1)
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("text") prints the text and exits 1
        err.write(f"{code}\n")
        code = 1
    out.flush()
    err.flush()
    return Result(
        argv=tuple(args),
        code=code,
        out=out_bytes.getvalue().decode("utf-8"),
        err=err_bytes.getvalue().decode("utf-8"),
        escaped=box.get("escaped"),
    )


# -- what must hold for every input --------------------------------------------------------
def strict_json(text: str) -> Any:
    def refuse(token: str) -> Any:
        raise ValueError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


def store_digest(home: Path) -> tuple[dict[str, int], str, list[str], bytes | None]:
    """Everything a command could write: row counts, row content, files, secrets."""
    counts = table_counts(home)
    digest = hashlib.sha256()
    db = home / "launchctl.db"
    if db.exists():
        conn = sqlite3.connect(db)
        try:
            for table in sorted(counts):
                digest.update(table.encode())
                for row in conn.execute(f"SELECT * FROM [{table}] ORDER BY rowid"):
                    digest.update(repr(row).encode())
        finally:
            conn.close()
    files = sorted(
        str(p.relative_to(home))
        for p in home.rglob("*")
        if not p.name.startswith("launchctl.db")  # the database, its WAL and its locks
    )
    secrets = home / "secrets.json"
    return counts, digest.hexdigest(), files, secrets.read_bytes() if secrets.exists() else None


# The columns the store keeps JSON documents in (see launchctl/store/*.py: dumps()).
JSON_COLUMNS = frozenset({"spec", "config", "source", "entrypoint", "queues", "devices"})


def assert_store_sane(home: Path) -> None:
    """Every JSON document the store holds is strict JSON (no NaN, no Infinity) of valid
    Unicode text (no lone surrogates: a run given one in its environment cannot start)."""
    conn = sqlite3.connect(home / "launchctl.db")
    try:
        for table in table_counts(home):
            cursor = conn.execute(f"SELECT * FROM [{table}]")
            columns = [c[0] for c in cursor.description]
            for row in cursor:
                for column, value in zip(columns, row, strict=True):
                    if column not in JSON_COLUMNS or value is None:
                        continue
                    try:
                        # Strict JSON, and text a process can be given (no lone surrogates).
                        json.dumps(strict_json(value), ensure_ascii=False).encode("utf-8")
                    except ValueError as exc:  # UnicodeEncodeError is a ValueError
                        raise AssertionError(
                            f"{table}.{column} holds {value!r:.300}:"
                            f" not strict JSON of valid text ({exc})"
                        ) from None
    finally:
        conn.close()


def assert_clean_refusal(result: Result) -> None:
    """A non-zero exit: one clear line on stderr, no traceback, no internal error."""
    assert result.escaped is None, f"an exception escaped main():\n{result}"
    assert result.code in (1, 2), f"exit status {result.code}, not 0, 1 or 2:\n{result}"
    assert "Traceback" not in result.err, f"a traceback:\n{result}"
    assert "internal error" not in result.err, f"an internal error (a bug):\n{result}"
    if result.err.startswith(ERROR_PREFIX):
        lines = result.err.split("\n")
        assert lines[1:] == [""], f"more than one line on stderr:\n{result}"
        assert lines[0][len(ERROR_PREFIX) :].strip(), f"an empty message:\n{result}"
    else:
        # Click's own usage errors are one launchctl line too (issue 12, item 12): only a
        # group given no command prints something else, its help.
        usage = CLICK_HELP.fullmatch(result.err)
        assert result.code == 2 and usage, (
            f"stderr is neither one 'launchctl: error:' line nor a usage error:\n{result}"
        )


def check(home: Path, *args: str, on_success: Callable[[Result], None] | None = None) -> Result:
    """Run ``launchctl ARGS`` and assert the property; ``on_success`` checks an exit 0."""
    before = store_digest(home)
    result = run_cli(*args)
    if currently_in_test_context():  # for --hypothesis-show-statistics: the outcomes reached
        event(f"exit {result.code}: " + re.sub(r"['\"(].*", "", result.err.partition("\n")[0])[:60])
    assert result.escaped is None, f"an exception escaped main():\n{result}"
    assert result.code in (0, 1, 2), f"exit status {result.code}, not 0, 1 or 2:\n{result}"
    if result.code == 0:
        assert "Traceback" not in result.err and "internal error" not in result.err, str(result)
        assert_store_sane(home)
        if on_success is not None:
            on_success(result)
        return result
    assert_clean_refusal(result)
    after = store_digest(home)
    assert after == before, f"a refused command wrote to the store:\n{result}"
    return result


# -- a store to fuzz against ---------------------------------------------------------------
@dataclass
class Seed:
    home: Path
    work: Path  # the current directory of the fuzzed commands; config files go here
    run_id: str
    names: Iterator[int]

    def store(self) -> Store:
        return Store(self.home)


# -- success checks ------------------------------------------------------------------------
def _lists(value: Any) -> Any:
    """Tuples as lists (an !!omap or !!python/tuple-free YAML pairs), nothing else changed."""
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_lists(v) for v in value]
    return value


def _expected_config(value: str) -> dict[str, Any]:
    """What the command parsed, without the template definitions (stored normalised)."""
    parsed = load_mapping(value, "config")
    return {k: _lists(v) for k, v in parsed.items() if k != "template_variables"}


def queue_holds(seed: Seed, name: str, value: str) -> Callable[[Result], None]:
    def verify(result: Result) -> None:
        store = seed.store()
        try:
            stored = store.queues.get(name)["config"]
        finally:
            store.close()
        body = {k: v for k, v in stored.items() if k != "template_variables"}
        expected = _expected_config(value)
        assert body == expected, (
            f"the stored config is not the config given:\n{result}\nstored: {stored!r:.500}"
        )

    return verify


def run_matched(seed: Seed, given_id: str) -> Callable[[Result], None]:
    def verify(result: Result) -> None:
        store = seed.store()
        try:
            ids = [r["id"] for r in store.runs.select(limit=None)]
        finally:
            store.close()
        # A unique *prefix* is enough, as with git hashes: nothing else may match.
        matching = [i for i in ids if given_id and i.startswith(given_id)]
        assert len(matching) == 1 and matching[0] in result.out, (
            f"run {given_id!r} matched a run it is not a unique prefix of:\n{result}"
        )

    return verify
