"""Bad input: fuzz the CLI's arguments and config files (hypothesis).

Malformed YAML and JSON (truncated, mistyped, tabs, duplicate and non-string keys, tags
like ``!!python/object``, anchors, BOMs, several documents), wrong types in every field
of a queue config and a launch spec, huge values (10**400, 5000-digit numbers, 1e308,
NaN, nesting up to 5000 deep, 100 KB arguments), unicode and non-UTF-8 bytes, empty files,
directories, links and missing paths, given to ``queue create/edit --config``, ``launch
-q Q`` (with ``-c``, ``-R``, ``--set``, ``--set-var``, ``-P`` and the other flags),
``queue template set`` (flags and ``--file``), ``job create code``, ``runs list/show/
cancel``, ``job show``, ``queue render``, ``queue template unset``, and random arguments
to every command that neither runs nor waits. The property, for every input:

- the exit status is 0, 1 or 2, and no exception escapes ``main()``;
- a non-zero exit prints exactly one line on stderr, ``launchctl: error: ...`` (or, for
  exit 2 only, click's own usage error: ``Usage:``/``Try`` lines, then one ``Error:`` line,
  or a group's help), never a traceback and never ``internal error``;
- a non-zero exit writes nothing: every table's rows (content, not only counts), the files
  under ``$LAUNCHCTL_HOME`` and the secrets file are as they were;
- a zero exit writes something sane: the store's JSON is strict (no NaN) and valid text
  (no lone surrogates), and what the command reports (the queue's config as given, the
  queued run with its --set keys, the job, the definition, the run an id prefix names)
  is really there.

A subprocess costs ~0.2 s, so ``main()`` runs in-process (``run_cli``), in a fresh thread
(so deep-nesting inputs meet the same recursion depth as in a real process), with stdout
and stderr as a real process has them: UTF-8, strict on stdout and backslashreplace on
stderr. ``test_in_process_runner_matches_a_real_process`` checks that shortcut against
real subprocesses. Only commands that start no agent and no run are fuzzed: every
``launch`` here has a non-empty ``--queue`` and no ``--wait``. Every input the fuzz found
to break the property is kept in ``FOUND`` as a named regression test.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import os
import re
import sqlite3
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from launchctl.cli import main
from launchctl.configfile import load_mapping
from launchctl.launch import OVERRIDE_KEYS, PRIORITIES, SPEC_KEYS
from launchctl.queues import CONFIG_KEYS
from launchctl.runners import registry
from launchctl.states import State
from launchctl.store import Store
from tests.conftest import EXAMPLES, cli, table_counts

HELLO = str(EXAMPLES / "hello")
MAX_ARG_BYTES = 100_000  # Linux takes up to 128 KiB in one argument
ERROR_PREFIX = "launchctl: error: "
CLICK_USAGE_ERROR = re.compile(
    r"(?:Usage: launchctl [^\n]*\n(?:Try 'launchctl [^\n]*' for help\.\n)?\n)?Error: [^\n]+\n"
)
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
def _strict_json(text: str) -> Any:
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
                        json.dumps(_strict_json(value), ensure_ascii=False).encode("utf-8")
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
        usage = CLICK_USAGE_ERROR.fullmatch(result.err) or CLICK_HELP.fullmatch(result.err)
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


def _ok(*args: str) -> Result:
    result = run_cli(*args)
    assert result.code == 0 and result.escaped is None, str(result)
    return result


@pytest.fixture
def seed(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Seed:
    """A store with a templated queue, a container queue, two jobs and one queued run."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    _ok("queue", "create", "q", "--config", json.dumps(SEED_QUEUE_CONFIG))
    _ok("queue", "create", "box", "--resource", "local-container")
    _ok("job", "create", "code", HELLO, "-E", "python train.py", "-n", "hello")
    _ok("job", "create", "image", "launchctl-test/busybox:latest", "-E", "true", "-n", "img")
    run_id = _ok("launch", "--queue=q", "--job=hello").out.strip()
    assert re.fullmatch(r"[a-z0-9]{8}", run_id), run_id
    # Odd things on disk for path arguments: a directory named like a config file, a
    # dangling link, a link loop, odd file names, a code directory with odd file names.
    (work / "dir.json").mkdir()
    (work / "dangling.yaml").symlink_to(work / "nowhere.yaml")
    (work / "loop.json").symlink_to(work / "loop.json")
    code = work / "code"
    code.mkdir()
    (code / "train.py").write_text("print('hi')\n")
    (code / "ünïcödé 🙂.py").write_text("x = 1\n")
    (code / "a\nnewline").write_text("")
    (code / "link").symlink_to("train.py")
    (work / "empty-dir").mkdir()
    (work / "a file.txt").write_text("not a directory\n")
    return Seed(home=home, work=work, run_id=run_id, names=itertools.count())


# -- strategies ----------------------------------------------------------------------------
def _cap(text: str) -> str:
    """At most MAX_ARG_BYTES once encoded, as an argument must be."""
    while len(os.fsencode(text)) > MAX_ARG_BYTES:
        text = text[: len(text) // 2]
    return text


def _argv_safe(text: str) -> str:
    """Text as a real argv holds it: no NUL, and lone surrogates only as surrogateescape
    makes them from non-UTF-8 bytes."""
    return _cap(os.fsdecode(text.encode("utf-8", "surrogatepass").replace(b"\0", b"")))


def _not_an_outside_dir(text: str) -> bool:
    """Keep random text from naming a real directory (``/``, ``~``, ``..``): a code job
    of it would snapshot the whole disk. Directories under the work folder are fine."""
    try:
        path = Path(text).expanduser().resolve()
        if not path.is_dir():
            return True
        return Path.cwd() in (path, *path.parents)
    except (OSError, ValueError, RuntimeError):
        return True


ARG_CHARS = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
ODD_STRINGS = [
    "", " ", "\t", "\n", " \n ", "-", "--", "-h", "--help", "=", "==", "a=", "=a", "a==b",
    ".", "./", "~", "~nobody", "~nosuchuser", "/dev/null", "/etc/passwd", "/proc/self/status",
    "missing.yaml", "dir.json", "dangling.yaml", "loop.json", "a file.txt", "empty-dir", "code",
    "null", "true", "false", "[]", "{}", "[1]", '"s"', "0", "-0", "-1", "1e999", "NaN",
    "Infinity", "-inf", "١٢", "²", "0x10", "1_000", "9" * 30, "%", "_", "%_%", "________",
    "'", '"', "a'b", '"unterminated', "{{x}}", "{{size}}", "${HOME}", "$(id)", "\u202eevil",
    "🙂", "\ufeff", "a\nb", "a\rb", "\x1b[31mred", "\x7f", "\u0085", "\u2028", "small",
    "large", "hello", "hello:v0", "hello:v99", "hello:", ":v0", "img", "q", "box",
]  # fmt: skip
# What argv can hold: any character but NUL; lone surrogates only from non-UTF-8 bytes.
ARG_TEXT = st.one_of(
    st.text(ARG_CHARS, max_size=30),
    st.binary(max_size=30).map(lambda b: os.fsdecode(b.replace(b"\0", b""))),
    st.sampled_from(ODD_STRINGS),
    st.builds(
        lambda s, n: _cap(s * n),
        st.text(ARG_CHARS, min_size=1, max_size=8),
        st.integers(1, 30_000),
    ),  # up to ~100 KB
    st.integers(4000, 6000).map(lambda n: "9" * n),  # over int()'s 4300 digits
).filter(_not_an_outside_dir)
SHORT_TEXT = st.one_of(st.text(max_size=12), st.sampled_from(ODD_STRINGS))


class Giant(int):
    """An integer with more digits (5000) than Python's int() reads from text (4300)."""

    def __repr__(self) -> str:
        return "Giant()"


HUGE_NUMBERS: dict[str, Any] = {
    "10**400": 10**400, "-10**400": -(10**400), "2**63": 2**63, "2**64": 2**64,
    "-2**63-1": -(2**63) - 1, "giant": Giant(9), "1e308": 1e308, "-1e308": -1e308,
    "5e-324": 5e-324, "-0.0": -0.0, "nan": math.nan, "inf": math.inf, "-inf": -math.inf,
}  # fmt: skip
HUGE = st.sampled_from(sorted(HUGE_NUMBERS)).map(HUGE_NUMBERS.__getitem__)
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), HUGE, SHORT_TEXT)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(SHORT_TEXT, inner, max_size=4),
    max_leaves=12,
)


@dataclass(frozen=True)
class Deep:
    """A value nested ``depth`` lists (or objects) deep: written out as text, never built."""

    depth: int
    as_dict: bool
    leaf: Any


ANY_VALUE = st.one_of(
    JSON_VALUES, st.builds(Deep, st.integers(1, 1500), st.booleans(), JSON_SCALARS)
)
NUMBERISH = st.one_of(
    st.integers(-5, 100),
    st.floats(),
    HUGE,
    st.sampled_from(["4", "4g", "512m", "16g", "2h", "90s", "0", "-1", "1e999", "0.5", " 2 "]),
)
TEMPLATE_NAMES = st.one_of(st.sampled_from(["size", "n", "gpus", "x", "bad name", ""]), SHORT_TEXT)
OPTION_VALUES = st.one_of(
    ANY_VALUE,
    NUMBERISH,
    st.sampled_from(
        ["all", "device=0,1", "device=", "device=x", "device=99999999999999999999", "{{size}}",
         "{{n}}", "{{missing}}", "${run_id}", "${UNKNOWN}"]
    ),
)  # fmt: skip
ENV = st.one_of(
    st.dictionaries(
        SHORT_TEXT,
        st.one_of(JSON_SCALARS, st.fixed_dictionaries({"secret": SHORT_TEXT}), JSON_VALUES),
        max_size=3,
    ),
    st.lists(st.one_of(SHORT_TEXT, st.just("A=1"), JSON_SCALARS), max_size=3),
    ANY_VALUE,
)
RESOURCES = registry.names()
ALL_OPTIONS = sorted(set().union(*(t.options for t in registry.types().values() if t.options)))
RESOURCE_ARGS = st.one_of(
    st.dictionaries(
        st.one_of(st.sampled_from(RESOURCES), SHORT_TEXT),
        st.one_of(
            st.dictionaries(
                st.one_of(st.sampled_from(ALL_OPTIONS), SHORT_TEXT), OPTION_VALUES, max_size=4
            ),
            st.fixed_dictionaries({}, optional={"env": ENV, "e": ENV}),
            ANY_VALUE,
        ),
        max_size=2,
    ),
    ANY_VALUE,
)
DEFINITION = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.one_of(st.sampled_from(["string", "integer", "number"]), JSON_SCALARS),
            "minimum": NUMBERISH,
            "maximum": NUMBERISH,
            "default": st.one_of(NUMBERISH, JSON_VALUES),
            "enum": st.one_of(st.lists(st.one_of(NUMBERISH, SHORT_TEXT), max_size=4), ANY_VALUE),
            "description": JSON_VALUES,
            "extra": JSON_SCALARS,
        },
    ),
    ANY_VALUE,
)
DEFINITIONS = st.one_of(st.dictionaries(TEMPLATE_NAMES, DEFINITION, max_size=3), ANY_VALUE)
QUEUE_CONFIG_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "resource_args": RESOURCE_ARGS,
    "builder": st.one_of(
        st.fixed_dictionaries({}, optional={"template_dir": SHORT_TEXT, "index_url": SHORT_TEXT}),
        ANY_VALUE,
    ),
    "registry": st.one_of(SHORT_TEXT, st.fixed_dictionaries({"url": SHORT_TEXT}), ANY_VALUE),
    "template_variables": DEFINITIONS,
    "artifact_cache": st.one_of(SHORT_TEXT, ANY_VALUE),
    "ceilings": st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "cpus": NUMBERISH,
                "memory": NUMBERISH,
                "gpus": OPTION_VALUES,
                "max_run_time": NUMBERISH,
            },
        ),
        ANY_VALUE,
    ),
    "gpu_sharing": st.one_of(st.integers(-2, 70), ANY_VALUE),
    "run_as": st.one_of(st.sampled_from(["nobody", "root", "no-such-user", ""]), ANY_VALUE),
    "retry": st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "max": st.one_of(st.integers(-2, 102), ANY_VALUE),
                "on": st.one_of(
                    st.lists(st.sampled_from(["failed", "timeout", "crashed"]), max_size=3),
                    ANY_VALUE,
                ),
                "backoff_s": st.one_of(NUMBERISH, ANY_VALUE),
            },
        ),
        ANY_VALUE,
    ),
}
# Every key launchctl knows is fuzzed (a new one fails here until it is added above).
assert set(QUEUE_CONFIG_FIELDS) >= set(CONFIG_KEYS), set(CONFIG_KEYS) - set(QUEUE_CONFIG_FIELDS)
QUEUE_CONFIG = st.one_of(
    st.fixed_dictionaries({}, optional=QUEUE_CONFIG_FIELDS),
    st.dictionaries(SHORT_TEXT, ANY_VALUE, max_size=3),  # unknown keys
)
LAUNCH_SPEC_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "uri": st.one_of(st.sampled_from([HELLO, "code", "missing", "https://x/y.git"]), ANY_VALUE),
    "job": st.one_of(st.sampled_from(["hello", "hello:v0", "img", "hello:v9", ""]), ANY_VALUE),
    "entry_point": st.one_of(SHORT_TEXT, st.lists(SHORT_TEXT, max_size=3), ANY_VALUE),
    "docker": st.one_of(
        st.fixed_dictionaries({"docker_image": st.one_of(SHORT_TEXT, ANY_VALUE)}), ANY_VALUE
    ),
    "resource": st.one_of(st.sampled_from(RESOURCES), ANY_VALUE),
    "resource_args": RESOURCE_ARGS,
    "overrides": st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "args": st.one_of(st.lists(SHORT_TEXT, max_size=3), ANY_VALUE),
                "run_config": st.one_of(st.dictionaries(SHORT_TEXT, ANY_VALUE), ANY_VALUE),
                "entry_point": st.one_of(SHORT_TEXT, st.lists(SHORT_TEXT), ANY_VALUE),
                "dockerfile": st.one_of(SHORT_TEXT, ANY_VALUE),
            },
        ),
        ANY_VALUE,
    ),
    "name": st.one_of(SHORT_TEXT, ANY_VALUE),
    "project": st.one_of(SHORT_TEXT, ANY_VALUE),
    "entity": st.one_of(SHORT_TEXT, ANY_VALUE),
    "priority": st.one_of(st.sampled_from([*PRIORITIES, 0, 3, 7, True]), ANY_VALUE),
    "queue": st.one_of(SHORT_TEXT, ANY_VALUE),
    "template_variables": st.one_of(
        st.dictionaries(TEMPLATE_NAMES, st.one_of(NUMBERISH, JSON_VALUES), max_size=3),
        ANY_VALUE,
    ),
    "git": st.one_of(st.fixed_dictionaries({"commit": SHORT_TEXT}), ANY_VALUE),
    "builder": ANY_VALUE,
    "registry": ANY_VALUE,
    "author": ANY_VALUE,
}
assert set(LAUNCH_SPEC_FIELDS) >= SPEC_KEYS, sorted(SPEC_KEYS - set(LAUNCH_SPEC_FIELDS))
assert {"args", "run_config", "entry_point", "dockerfile"} >= OVERRIDE_KEYS
LAUNCH_SPEC = st.one_of(
    st.fixed_dictionaries({}, optional=LAUNCH_SPEC_FIELDS),
    st.dictionaries(SHORT_TEXT, ANY_VALUE, max_size=3),  # unknown keys
)


# Writing a generated document out: JSON (with NaN tokens and giant numbers), or YAML.
def to_json(value: Any, indent: bool = False) -> str:
    if isinstance(value, Deep):
        opening, closing = ('{"a": ', "}") if value.as_dict else ("[", "]")
        return opening * value.depth + to_json(value.leaf) + closing * value.depth
    if isinstance(value, Giant):
        return "9" * 5000
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        items = (f"{json.dumps(str(k))}: {to_json(v)}" for k, v in value.items())
        return "{" + (",\n" if indent else ",").join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return json.dumps(value)


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    Giant, lambda dumper, _v: dumper.represent_scalar("tag:yaml.org,2002:int", "9" * 5000)
)


def _has_deep(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_deep(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_deep(v) for v in value)
    return isinstance(value, Deep)


def to_yaml(value: Any, flow: bool) -> str:
    if _has_deep(value):
        return to_json(value)  # YAML 1.1 reads most JSON
    return yaml.dump(value, Dumper=_Dumper, default_flow_style=flow, allow_unicode=True)


NASTY_DOCS = [
    # What safe_load must refuse, or what is not an object.
    "!!python/object/apply:os.system ['true']",
    "builder: !!python/object/apply:os.system ['true']",
    "builder: !!python/name:os.system",
    "builder: !!python/tuple [1, 2]",
    "builder: !custom x",
    "%TAG ! tag:yaml.org,2002:python/\n---\nbuilder: !object:os.system {}",
    "builder: {a: =}",
    "[a, b]", "- a\n- b", "null", "~", "", "   ", "---", "...", "--- 1\n--- 2\n", "'s'", "1",
    # Values JSON cannot store, or stores differently.
    "builder: !!binary aGVsbG8=",
    "builder: !!set {a, b}",
    "builder: {a: 2001-12-14}",
    "builder: {2001-12-14: a}",
    "builder: {a: .nan}", "builder: {a: .inf}", "builder: {a: -.inf}",
    "builder: !!omap [a: 1, b: 2]",
    "builder: {a: 0x1F, b: 0o17, c: 1_000, d: 1:20, e: 0b11}",
    "builder: &a [*a]",
    "builder: &a {x: *a}",
    # Keys that are not strings, at the top and below.
    "1: x", "? [a]: b", "? {a: b}: c", "null: 1", "true: 1", "1.5: x",
    "builder: {1: 2}", "builder: {null: 1, ~: 2}", "builder: {1: a, '1': b}",
    "resource_args: {local-process: {env: {1: a}}}",
    # Duplicate keys, merges, anchors, tabs, broken quoting, directives.
    "builder: {}\nbuilder: []", "a: 1\na: 2", "<<: {builder: {}}", "builder: {<<: *nope}",
    "builder:\n\t- a", "\tbuilder: {}", "builder: 'unterminated", 'builder: "\\x"',
    "builder: [", "builder: {a: [}", "builder:\n  - a\n - b", ": x", "? ", "&a", "*a",
    "%YAML 1.1\n---\nbuilder: {}", "%YAML 9.9\n---\nbuilder: {}", "%FOO bar\n---\n{}",
    "builder: \x07", "builder: \x85x", "\ufeffbuilder: {}", "builder: {a: \ufeff}",
    # Nearly valid configs, to reach the deeper checks.
    "resource_args: {local-process: {env: {A: {secret: wandb-key}}}}",
    "resource_args: {local-process: {env: {A: {secret: '../x'}}}}",
    "resource_args: {local-container: {privileged: true}}",
    "resource_args: {local-process: {gpus: '{{g}}'}}\ntemplate_variables: {g: {type: integer}}",
    "template_variables: {g: {type: integer, minimum: 5, maximum: 1}}",
    "template_variables: {g: {type: string, enum: []}}",
    "template_variables: {g: {type: integer, default: 1.5}}",
    "ceilings: {cpus: 0, memory: 0g, max_run_time: 0s, gpus: all}",
    "ceilings: {memory: 99999999999999999999999t}",
    "retry: {max: 101, on: [failed], backoff_s: 1e999}",
    "gpu_sharing: 1e2",
    # A small alias bomb (4 * 4 * 4 * 2 leaves).
    "a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\nc: &c [*b, *b, *b, *b]\nbuilder: [*c, *c]",
    # JSON that is broken, or holds what JSON cannot store.
    '{"builder": {}', '{"a":', "[", '{"builder": NaN}', '{"builder": {"a": Infinity}}',
    '{"builder": {"a": 1e400}}', '{"builder": {"\\ud800": "\\udfff"}}', '{"\\ud800": 1}',
    '{"builder": "\\u0000"}', '{"a": 1, "a": 2}', '{"builder": {}}  trailing',
    "{'builder': {}}", '{"builder": {},}',
]  # fmt: skip


def _big_doc(kind: str, n: int) -> str:
    """Deep nesting (the recursion limit) and long numbers, ``n`` levels or digits."""
    return {
        "yaml-list": "builder: " + "[" * n + "]" * n,
        "yaml-map": "builder: " + "{a: " * n + "1" + "}" * n,
        "yaml-block": "".join(f"{' ' * i}a:\n" for i in range(min(n, 600))),
        "json-list": '{"builder": ' + "[" * n + "]" * n + "}",
        "json-map": '{"builder": ' + '{"a": ' * n + "1" + "}" * n + "}",
        "open-list": "[" * n * 20,
        "open-map": '{"a":' * n * 4,
        "json-digits": '{"builder": {"a": ' + "1" * (n + 1000) + "}}",
        "yaml-digits": "builder: {a: " + "1" * (n + 1000) + "}",
    }[kind]


BIG_DOCS = st.builds(
    _big_doc,
    st.sampled_from(
        ["yaml-list", "yaml-map", "yaml-block", "json-list", "json-map", "open-list",
         "open-map", "json-digits", "yaml-digits"]
    ),
    st.integers(1, 5000),
)  # fmt: skip


def _mutate(text: str, how: int, where: float, char: str) -> str:
    at = int(len(text) * where)
    if how == 1:  # truncated
        return text[:at]
    if how == 2:  # a character dropped
        return text[:at] + text[at + 1 :]
    if how == 3:  # a character inserted
        return text[:at] + char + text[at:]
    if how == 4:  # tabs for indentation
        return re.sub(r"(?m)^  ", "\t", text)
    if how == 5:  # a BOM in front
        return "\ufeff" + text
    if how == 6:  # two documents
        return text + "\n---\n" + text
    return text


def config_text(document: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    """Config text: a generated document as JSON or YAML, maybe broken; nasty documents."""
    written = st.one_of(
        st.builds(to_json, document, st.booleans()), st.builds(to_yaml, document, st.booleans())
    )
    return st.one_of(
        written,
        written,
        st.builds(
            _mutate,
            st.one_of(written, st.sampled_from(NASTY_DOCS)),
            st.integers(0, 6),
            st.floats(0, 1),
            st.sampled_from(["{", "}", "[", "]", ":", ",", '"', "'", "\t", "\n", "&", "*", "!"]),
        ),
        st.sampled_from(NASTY_DOCS),
        BIG_DOCS,
        ARG_TEXT,
    )


@dataclass(frozen=True)
class ConfigFile:
    """A config argument that is a path: a file with these bytes, or something else."""

    suffix: str
    content: bytes | None
    kind: str  # "file", "dir", "missing", "oversize", or a path as it is

    def make(self, folder: Path, stem: str) -> str:
        if self.kind not in ("file", "dir", "missing", "oversize"):
            return self.kind
        path = folder / f"{stem}{self.suffix}"
        if self.kind == "dir":
            path.mkdir()
        elif self.kind == "oversize":
            path.write_bytes(b"builder: {}\n" + b" " * (4 * 1024 * 1024))
        elif self.kind == "file" and self.content is not None:
            path.write_bytes(self.content)
        return str(path)


def _encodings(text: str) -> st.SearchStrategy[bytes]:
    raw = text.encode("utf-8", "surrogatepass")
    return st.sampled_from(
        [
            raw,
            b"\xef\xbb\xbf" + raw,  # a BOM
            text.encode("utf-16", "surrogatepass"),
            text.encode("latin-1", "replace"),
            raw + b"\n\xff\xfe\x80",  # not UTF-8
        ]
    )


def config_arg(document: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A config option's value: ("inline", text), or a ConfigFile to write first."""
    text = config_text(document)
    return st.one_of(
        text.map(lambda t: ("inline", _argv_safe(t))),
        st.builds(
            ConfigFile,
            suffix=st.sampled_from([".json", ".yaml", ".yml", ".JSON", ".Yml", "", ".txt"]),
            content=st.one_of(
                text.flatmap(_encodings),
                st.binary(max_size=200),
                st.sampled_from([b"", b" ", b"\n\n", b"\t", b"\x00", b"\xef\xbb\xbf"]),
            ),
            kind=st.just("file"),
        ),
        st.builds(
            ConfigFile,
            suffix=st.sampled_from([".json", ".yaml", ".yml", ""]),
            content=st.none(),
            kind=st.sampled_from(["dir", "missing", "oversize"]),
        ),
        st.builds(
            ConfigFile,
            suffix=st.just(""),
            content=st.none(),
            kind=st.sampled_from(
                [
                    "dir.json",
                    "dangling.yaml",
                    "loop.json",
                    "missing.yml",
                    "code",
                    "a file.txt",
                    "/dev/null",
                    "/etc/passwd",
                    "/proc/self/status",
                    "~nosuchuser/c.yaml",
                    "x" * 300 + ".json",
                    "~/" + "y" * 5000 + ".yaml",
                ]
            ),
        ),
    )


def _config_value(seed: Seed, arg: Any) -> str:
    if isinstance(arg, ConfigFile):
        return arg.make(seed.work, f"cfg{next(seed.names)}")
    return str(arg[1])


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


def _queue_holds(seed: Seed, name: str, value: str) -> Callable[[Result], None]:
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


# -- the fuzz tests ------------------------------------------------------------------------
@SETTINGS
@given(arg=config_arg(QUEUE_CONFIG), edit=st.booleans(), resource=st.sampled_from(RESOURCES))
def test_queue_config_bad_input_gets_one_line_and_no_write(
    seed: Seed, arg: Any, edit: bool, resource: str
) -> None:
    """`queue create NAME --config X` and `queue edit q --config X`, inline or from a file."""
    value = _config_value(seed, arg)
    if edit:
        check(
            seed.home,
            "queue",
            "edit",
            "q",
            "--config",
            value,
            on_success=_queue_holds(seed, "q", value),
        )
    else:
        name = f"fz{next(seed.names)}"
        check(
            seed.home,
            "queue", "create", name, "--resource", resource, "--config", value,
            on_success=_queue_holds(seed, name, value),
        )  # fmt: skip


def _launched(seed: Seed, queue: str, sets: list[str]) -> Callable[[Result], None]:
    def verify(result: Result) -> None:
        run_id = result.out.strip()
        assert re.fullmatch(r"[a-z0-9]{8}", run_id), f"no run id on stdout:\n{result}"
        store = seed.store()
        try:
            run = store.runs.get(run_id)
        finally:
            store.close()
        assert run["id"] == run_id and run["state"] == "queued", str(result)
        assert run["queue_name"] == queue, str(result)
        run_config = (run["spec"].get("overrides") or {}).get("run_config") or {}
        for pair in sets:
            key = pair.partition("=")[0].strip()
            assert key in run_config, f"--set {key} is not in the run's config:\n{result}"

    return verify


SET_VALUE = st.one_of(ARG_TEXT, st.builds(to_json, ANY_VALUE, st.just(False)), NUMBERISH.map(str))
SET_PAIR = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["lr", "epochs", " lr ", "a.b"]), SET_VALUE),
    st.builds(lambda k, v: f"{k}={v}", ARG_TEXT, SET_VALUE),
    st.integers(1, 5).flatmap(lambda i: ARG_TEXT if i == 1 else st.just("lr=1")),  # maybe no '='
).map(_argv_safe)
SET_VAR = st.one_of(
    st.builds(
        lambda k, v: f"{k}={v}",
        st.sampled_from(["size", "n"]),
        st.one_of(st.sampled_from(["small", "large", "1", "4", "2.0", " 3"]), NUMBERISH.map(str)),
    ),
    st.builds(lambda k, v: f"{k}={v}", TEMPLATE_NAMES, st.one_of(ARG_TEXT, NUMBERISH.map(str))),
    ARG_TEXT,
).map(_argv_safe)


def mostly(
    good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any], one_in: int = 4
) -> st.SearchStrategy[Any]:
    """``bad`` one time in ``one_in``, else ``good``: one bad input at a time gets deep."""
    return st.integers(1, one_in).flatmap(lambda i: bad if i == 1 else good)


def sometimes(strategy: st.SearchStrategy[Any], one_in: int = 4) -> st.SearchStrategy[Any]:
    """The strategy one time in ``one_in``, else None: most examples leave the option out,
    so that they get past it to the checks after it."""
    return mostly(st.none(), strategy, one_in)


@SETTINGS
@given(
    queue=mostly(st.sampled_from(["q", "q", "box"]), ARG_TEXT.filter(bool)),
    source=mostly(
        st.sampled_from(
            [
                ["--job=hello"],
                ["--job=hello:v0"],
                ["--job=img"],
                ["--uri=" + HELLO, "--entry-point=python train.py"],
                ["--docker-image=launchctl-test/busybox:latest"],
            ]
        ),
        st.one_of(
            st.just([]),
            st.builds(lambda j: ["--job=" + j], ARG_TEXT),
            st.builds(lambda d: ["--docker-image=" + d], ARG_TEXT),
            st.builds(lambda u, e: ["--uri=" + u, "--entry-point=" + e], ARG_TEXT, ARG_TEXT),
        ),
    ),
    sets=st.lists(mostly(st.sampled_from(["lr=0.5", "epochs=3"]), SET_PAIR, 2), max_size=3),
    set_vars=st.lists(
        mostly(st.sampled_from(["size=large", "n=2", "n=4"]), SET_VAR, 2), max_size=2
    ),
    config=sometimes(config_arg(LAUNCH_SPEC)),
    resource_args=sometimes(config_arg(RESOURCE_ARGS)),
    flags=st.dictionaries(
        st.sampled_from(
            [
                "--priority",
                "--name",
                "--project",
                "--entity",
                "--args",
                "--entry-point",
                "--dockerfile",
                "--resource",
            ]
        ),
        mostly(st.sampled_from([*PRIORITIES, "python train.py", "x"]), ARG_TEXT, 2),
        max_size=3,
    ),
)
def test_launch_bad_input_gets_one_line_and_no_write(
    seed: Seed,
    queue: str,
    source: list[str],
    sets: list[str],
    set_vars: list[str],
    config: Any,
    resource_args: Any,
    flags: dict[str, str],
) -> None:
    """`launch --queue Q ...`: queued, never run (no agent is started)."""
    argv = ["launch", *source]
    argv += [f"--set={s}" for s in sets]
    argv += [f"--set-var={s}" for s in set_vars]
    if config is not None:
        argv.append("--config=" + _config_value(seed, config))
    if resource_args is not None:
        argv.append("--resource-args=" + _config_value(seed, resource_args))
    argv += [f"{flag}={_argv_safe(value)}" for flag, value in flags.items()]
    argv.append(f"--queue={queue}")  # last, and never empty: the run is only ever queued
    check(seed.home, *argv, on_success=_launched(seed, queue, sets))


def _job_created(seed: Seed, name: str | None) -> Callable[[Result], None]:
    def verify(result: Result) -> None:
        match = re.fullmatch(
            r"(?:created|unchanged, reusing) job (\S+)/([^/\s]+):v(\d+) \(code\)\n", result.out
        )
        assert match, f"unexpected output:\n{result}"
        store = seed.store()
        try:
            row = store.jobs.version(match.group(2), f"v{match.group(3)}", entity=match.group(1))
        finally:
            store.close()
        assert row["source_type"] == "code", str(result)
        if name:  # an empty --name is the default name
            assert row["name"] == name, str(result)

    return verify


@SETTINGS
@given(
    path=mostly(
        st.sampled_from([HELLO, "code"]),
        st.one_of(st.sampled_from(["empty-dir", "a file.txt", "missing", "~nosuchuser"]), ARG_TEXT),
    ),
    entry=mostly(
        st.sampled_from(["python train.py", "true"]),
        st.one_of(st.none(), st.just("python missing.py"), ARG_TEXT),
    ),
    flags=st.dictionaries(
        st.sampled_from(["--name", "--project", "--entity", "--dockerfile"]),
        mostly(st.sampled_from(["train.py", "link", "ok-name"]), ARG_TEXT, 2),
        max_size=3,
    ),
)
def test_job_create_code_bad_input_gets_one_line_and_no_write(
    seed: Seed, path: str, entry: str | None, flags: dict[str, str]
) -> None:
    """`job create code PATH -E CMD` with odd paths, entry points, names and Dockerfiles."""
    argv = ["job", "create", "code"]
    if entry is not None:
        argv.append("--entry-point=" + entry)
    argv += [f"{flag}={value}" for flag, value in flags.items()]
    argv += ["--", path]  # a path like "-h" is a path, not an option
    check(seed.home, *argv, on_success=_job_created(seed, flags.get("--name")))


def _defined(seed: Seed, queue: str, names: list[str]) -> Callable[[Result], None]:
    def verify(result: Result) -> None:
        store = seed.store()
        try:
            config = store.queues.get(queue)["config"]
        finally:
            store.close()
        for name in names:
            assert name in (config.get("template_variables") or {}), str(result)

    return verify


NUMBER_TEXT = st.one_of(
    NUMBERISH.map(str),
    st.sampled_from(["1e999", "-1e999", "nan", "inf", "١٢", "²", "+5", "--5", "1_0", " 3 ", "0x1"]),
    st.from_regex(r"[+-]?\d{1,6000}(\.\d{0,20})?", fullmatch=True),
    ARG_TEXT,
)


@SETTINGS
@given(
    queue=mostly(st.just("q"), st.one_of(st.sampled_from(["box", "nope"]), ARG_TEXT)),
    variable=mostly(
        st.sampled_from(["x", "size", "n"]),
        st.one_of(st.none(), TEMPLATE_NAMES.map(_argv_safe), ARG_TEXT),
    ),
    options=st.one_of(
        st.fixed_dictionaries(
            {"--type": st.sampled_from(["string", "integer", "number"])},
            optional={
                "--min": mostly(st.integers(-3, 9).map(str), NUMBER_TEXT),
                "--max": mostly(st.integers(-3, 9).map(str), NUMBER_TEXT),
                "--default": mostly(st.integers(-3, 9).map(str), NUMBER_TEXT),
                "--options": st.one_of(st.sampled_from(["a,b", "1,2", ",,", " , a"]), ARG_TEXT),
                "--description": ARG_TEXT,
            },
        ),
        st.dictionaries(
            st.sampled_from(
                ["--type", "--min", "--max", "--default", "--options", "--description"]
            ),
            st.one_of(NUMBER_TEXT, st.sampled_from(["string", "integer", "number", "bool"])),
            max_size=6,
        ),
    ),
    file=sometimes(config_arg(st.one_of(DEFINITIONS, DEFINITION))),
)
def test_queue_template_set_bad_input_gets_one_line_and_no_write(
    seed: Seed, queue: str, variable: str | None, options: dict[str, str], file: Any
) -> None:
    """`queue template set QUEUE VAR --type T --min X --max Y --default D` and `--file`."""
    argv = ["queue", "template", "set"]
    argv += [f"{flag}={_argv_safe(value)}" for flag, value in options.items()]
    if file is not None:
        argv.append("--file=" + _config_value(seed, file))
    argv += ["--", queue] + ([variable] if variable is not None else [])
    names = [variable] if variable else []  # an empty VARIABLE: the names in --file
    check(seed.home, *argv, on_success=_defined(seed, queue, names))


def _run_matched(seed: Seed, given_id: str) -> Callable[[Result], None]:
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


def _run_id_arg(seed: Seed) -> st.SearchStrategy[str]:
    real = seed.run_id
    return st.one_of(
        ARG_TEXT,
        st.sampled_from(
            [real, real[:3], real.upper(), real[:3].upper(), "_" * 8, "_", "%", real[0] + "_",
             real[:2] + "%", real + "x", real[:-1]]
        ),
    )  # fmt: skip


@SETTINGS
@given(data=st.data())
def test_run_commands_bad_input_gets_one_line_and_no_write(seed: Seed, data: st.DataObject) -> None:
    """`runs list --state --limit`, `runs show ID`, `runs cancel ID` and other lookups."""
    command = data.draw(st.sampled_from(["list", "show", "cancel", "job show", "render", "unset"]))
    if command == "list":
        argv = ["runs", "list"]
        for state in data.draw(
            st.lists(st.one_of(st.sampled_from([s.value for s in State]), ARG_TEXT), max_size=2)
        ):
            argv.append(f"--state={state}")
        limit = data.draw(
            st.one_of(
                st.none(),
                st.integers(-5, 5).map(str),
                st.sampled_from(["99999999999999999999", str(2**63), str(2**63 - 1), "1e3"]),
                ARG_TEXT,
            )
        )
        if limit is not None:
            argv.append(f"--limit={limit}")
        queue = data.draw(st.one_of(st.none(), st.sampled_from(["q", "box"]), ARG_TEXT))
        if queue is not None:
            argv.append(f"--queue={queue}")
        argv.append("--json")

        def listed(result: Result) -> None:
            rows = _strict_json(result.out)
            assert isinstance(rows, list), str(result)
            if limit is not None and limit.strip().isdigit() and int(limit) > 0:
                assert len(rows) <= int(limit), str(result)

        check(seed.home, *argv, on_success=listed)
        return
    if command in ("show", "cancel"):
        given_id = data.draw(_run_id_arg(seed))
        check(seed.home, "runs", command, "--", given_id, on_success=_run_matched(seed, given_id))
        return
    if command == "job show":
        check(
            seed.home,
            "job",
            "show",
            "--",
            data.draw(st.one_of(st.sampled_from(ODD_STRINGS), ARG_TEXT)),
        )
        return
    if command == "render":
        argv = ["queue", "render"]
        argv += [f"--set-var={v}" for v in data.draw(st.lists(SET_VAR, max_size=3))]
        argv += ["--", data.draw(st.one_of(st.just("q"), ARG_TEXT))]
        check(seed.home, *argv, on_success=lambda r: _strict_json(r.out) and None)
        return
    check(
        seed.home,
        "queue", "template", "unset", "--",
        data.draw(st.one_of(st.sampled_from(["q", "box"]), ARG_TEXT)),
        data.draw(st.one_of(TEMPLATE_NAMES.map(_argv_safe), ARG_TEXT)),
    )  # fmt: skip


# Commands that start no agent and no run, and read no stdin.
SAFE_COMMANDS = [
    ["queue", "create"], ["queue", "edit"], ["queue", "show"], ["queue", "list"],
    ["queue", "pause"], ["queue", "resume"], ["queue", "delete"], ["queue", "template"],
    ["queue", "template", "set"], ["queue", "template", "unset"], ["queue", "render"],
    ["job", "create", "code"], ["job", "create", "image"], ["job", "create", "git"],
    ["job", "list"], ["job", "show"], ["runs", "list"], ["runs", "show"], ["runs", "cancel"],
    ["runs", "rerun"], ["team", "create"], ["team", "add"], ["team", "remove"],
    ["team", "list"], ["team", "show"], ["queue"], ["job"], ["runs"], ["team"], [],
]  # fmt: skip
OPTION_TOKENS = [
    "--config", "-c", "--resource", "-r", "--entity", "-e", "--description", "--json",
    "--force", "--type", "--min", "--max", "--default", "--options", "--file", "-f",
    "--set-var", "-v", "--entry-point", "-E", "--name", "-n", "--project", "-p",
    "--dockerfile", "-D", "--git-hash", "--queue", "-q", "--state", "-s", "--limit",
    "--set", "--priority", "-P", "--admin", "--version", "-h", "--bogus", "--", "-",
]  # fmt: skip


@SETTINGS
@given(
    command=st.sampled_from(SAFE_COMMANDS),
    tokens=st.lists(
        st.one_of(st.sampled_from(OPTION_TOKENS), st.sampled_from(["q", "box", "hello"]), ARG_TEXT),
        max_size=6,
    ),
)
def test_any_argv_gets_one_line_or_a_usage_error(
    seed: Seed, command: list[str], tokens: list[str]
) -> None:
    """Random arguments after any command that neither runs nor waits."""
    check(seed.home, *command, *(_argv_safe(t) for t in tokens))


# -- what the fuzz found ------------------------------------------------------------------
# Each input below broke the property when it was written (an internal error, two lines,
# a write on refusal, or a bad write on success); each stays here as a named regression.
# {run} is the seeded run's id, {RUN} its first letters upper-cased, {code} a code folder
# the store has not seen.
FOUND = [
    pytest.param(["runs", "list", "--limit", "99999999999999999999"], id="limit-above-int64"),
    pytest.param(["launch", "--queue=q", "--job=hello", "--name=\udcff"], id="non-utf8-run-name"),
    pytest.param(["queue", "create", "z", "--description", "\udcff"], id="non-utf8-description"),
    pytest.param(["runs", "show", "--", "\udcff"], id="non-utf8-run-id"),
    pytest.param(
        ["job", "create", "code", "-E", "python train.py", "-p", "\udcff", HELLO],
        id="non-utf8-project",
    ),
    pytest.param(
        ["launch", "--queue=q", "--job=hello", "--set=x=" + "[" * 100_000], id="set-deep-json"
    ),
    pytest.param(
        ["queue", "create", "z", "--config", "builder: " + "[" * 5000 + "]" * 5000],
        id="config-deep-yaml",
    ),
    pytest.param(
        ["queue", "create", "z", "--config", '{"builder": ' + '{"a": ' * 800 + "1" + "}" * 801],
        id="config-deep-json-validation",
    ),
    pytest.param(
        ["queue", "create", "z", "--config", '{"builder": {"a": ' + "1" * 5000 + "}}"],
        id="config-json-5000-digits",
    ),
    pytest.param(
        ["queue", "create", "z", "--config", "builder: {a: " + "1" * 5000 + "}"],
        id="config-yaml-5000-digits",
    ),
    pytest.param(["queue", "create", "z", "--config", "~nosuchuser"], id="config-unknown-user"),
    pytest.param(
        ["job", "create", "code", "-E", "python train.py", "--", "~nosuchuser/x"],
        id="code-path-unknown-user",
    ),
    pytest.param(
        ["job", "create", "code", "-E", "python train.py", "--", "0" * 256],
        id="code-path-name-too-long",
    ),
    pytest.param(
        ["queue", "create", "z", "--config", "builder: {1: a, '1': b}"], id="config-mixed-keys"
    ),
    pytest.param(["queue", "create", "z", "--config", "builder: {1: 2}"], id="config-int-key"),
    pytest.param(
        [
            "queue",
            "create",
            "z",
            "--config",
            '{"resource_args": {"local-process": {"env": {"A": "\\ud800"}}}}',
        ],
        id="config-lone-surrogate",
    ),
    pytest.param(
        ["queue", "create", "z", "--config", 'registry: "\\ud800\\udc00"'],
        id="config-yaml-surrogate-pair",
    ),
    pytest.param(
        ["launch", "--queue=q", "--job=hello", '--config={"entry_point": 5}'],
        id="spec-entry-point-a-number",
    ),
    pytest.param(
        ["launch", "--queue=box", '--config={"docker": {"docker_image": [1]}}'],
        id="spec-docker-image-a-list",
    ),
    pytest.param(["launch", "--queue=q", "--job=hello", "--set=lr=NaN"], id="set-nan-stored"),
    pytest.param(
        ["queue", "template", "set", "q", "x", "--type", "integer", "--min", "9" * 400],
        id="template-min-over-float",
    ),
    pytest.param(
        [
            "queue",
            "create",
            "z",
            "--config",
            '{"template_variables": {"x": {"type": "integer", "maximum": 1' + "0" * 400 + "}}}",
        ],
        id="config-template-maximum-over-float",
    ),
    pytest.param(
        [
            "queue",
            "create",
            "z",
            "--config",
            '{"resource_args": {"local-process": {"cpus": 1' + "0" * 400 + "}}}",
        ],
        id="config-cpus-over-float",
    ),
    pytest.param(
        [
            "launch",
            "--queue=q",
            "--job=hello",
            '--resource-args={"local-process": {"max_run_time": 1' + "0" * 400 + "}}",
        ],
        id="resource-args-max-run-time-over-float",
    ),
    pytest.param(["runs", "show", "{RUN}"], id="run-prefix-ignores-case"),
    pytest.param(["runs", "cancel", "________"], id="run-prefix-underscore-wildcard"),
    pytest.param(["runs", "show", "--", "a\nb"], id="newline-in-run-id-message"),
    pytest.param(["queue", "create", "z", "--config", "a\nb.json"], id="newline-in-path-message"),
    pytest.param(
        ["job", "create", "code", "-E", "python train.py", "-n", "bad name", "--", "{code}"],
        id="bad-job-name-writes-snapshot",
    ),
]


@pytest.mark.parametrize("argv", FOUND)
def test_inputs_the_fuzz_found_get_one_line_and_no_write(seed: Seed, argv: list[str]) -> None:
    fresh = seed.work / "fresh-code"
    fresh.mkdir()
    (fresh / "train.py").write_text("print('fresh')\n")
    values = {"{run}": seed.run_id, "{RUN}": seed.run_id[:3].upper(), "{code}": str(fresh)}
    args = [values.get(a, a) for a in argv]
    on_success: Callable[[Result], None] | None = None
    if args[:2] == ["queue", "create"] and "--config" in args:
        on_success = _queue_holds(seed, args[2], args[args.index("--config") + 1])
    elif args[0] == "runs" and args[1] in ("show", "cancel"):
        on_success = _run_matched(seed, args[-1])
    check(seed.home, *args, on_success=on_success)


def test_a_yaml_alias_bomb_is_refused_quickly() -> None:
    """400 bytes of YAML anchors that expand to a million strings: refused, not stored.

    (When the fuzz found it, `queue create` took 38 s and 1 GB, and wrote a 69 MB config.)
    """
    lines = ["builder:", "  a0: &a0 [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 7)]
    try:
        proc = cli("queue", "create", "bomb", "--config", "\n".join(lines), timeout=5)
    except subprocess.TimeoutExpired:
        raise AssertionError("a 400-byte YAML alias bomb kept launchctl busy over 5 s") from None
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.startswith(ERROR_PREFIX) and proc.stderr.count("\n") == 1, proc.stderr


# -- the shortcut is trustworthy -----------------------------------------------------------
def test_in_process_runner_matches_a_real_process(seed: Seed) -> None:
    inputs = [
        ["queue", "create", "q"],
        ["queue", "create", "bad name"],
        ["queue", "create", "z1", "--config", "{"],
        ["queue", "create", "z1", "--config", "missing.yaml"],
        ["queue", "create", "z1", "--config", "dir.json"],
        ["queue", "edit", "q", "--config", "builder: [1"],
        ["queue", "create", "\udcff"],
        ["runs", "list", "--limit", "abc"],
        ["runs", "list", "--bogus"],
        ["runs", "show", "nope"],
        ["launch", "--queue=q", "--job=nope"],
        ["launch", "--queue=q", "--job=hello", "--set-var", "n=9"],
        ["queue", "show", "box", "--json"],
        ["--version"],
    ]
    for args in inputs:
        fast = run_cli(*args)
        real = cli(*args)
        assert fast.escaped is None, str(fast)
        assert (fast.code, fast.out, fast.err) == (real.returncode, real.stdout, real.stderr), (
            f"in-process and real process differ for {args}:\n{fast}\nreal: {real!r}"
        )
    # A write, the same way in both.
    assert run_cli("queue", "create", "in1").out == "created queue in1 (local-process)\n"
    assert cli("queue", "create", "in2").stdout == "created queue in2 (local-process)\n"
