"""Hypothesis strategies for the fuzz tests: argv text, documents, config files and flags.

Every strategy gives what a real argv or file could hold: no NUL in an argument, lone
surrogates only as surrogateescape makes them from non-UTF-8 bytes, arguments capped at
what Linux takes. Generated documents are written out as JSON or YAML (``config_text``),
maybe broken, or given as a file of odd bytes, a directory, a link or a missing path
(``config_arg``).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from launchctl.launch import OVERRIDE_KEYS, PRIORITIES, SPEC_KEYS
from launchctl.queues import CONFIG_KEYS
from launchctl.runners import registry

from .harness import HELLO, Seed

MAX_ARG_BYTES = 100_000  # Linux takes up to 128 KiB in one argument


def _cap(text: str) -> str:
    """At most MAX_ARG_BYTES once encoded, as an argument must be."""
    while len(os.fsencode(text)) > MAX_ARG_BYTES:
        text = text[: len(text) // 2]
    return text


def argv_safe(text: str) -> str:
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
    # issue 18: hooks when a run ends (launchctl.hooks.check_hooks)
    "hooks": st.one_of(
        st.lists(
            st.one_of(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "on": st.one_of(
                            st.lists(
                                st.sampled_from(["finished", "failed", "stopped", "preempted"]),
                                max_size=3,
                            ),
                            ANY_VALUE,
                        ),
                        "command": st.one_of(st.sampled_from(["true", "", "{{x}}"]), ANY_VALUE),
                        "webhook": st.one_of(
                            st.sampled_from(["http://127.0.0.1:9/h", "ftp://x", "http://"]),
                            st.fixed_dictionaries({"secret": SHORT_TEXT}),
                            ANY_VALUE,
                        ),
                        "notify": st.one_of(st.booleans(), ANY_VALUE),
                        "timeout": st.one_of(NUMBERISH, ANY_VALUE),
                        "retries": st.one_of(st.integers(-2, 22), ANY_VALUE),
                    },
                ),
                ANY_VALUE,
            ),
            max_size=3,
        ),
        ANY_VALUE,
    ),
    # issue 18: per-user limits (launchctl.limits) and stuck runs (launchctl.stall)
    "limits": st.one_of(
        st.fixed_dictionaries({}, optional={"per_user": st.one_of(st.integers(-2, 5), ANY_VALUE)}),
        ANY_VALUE,
    ),
    "stall_after": st.one_of(
        st.sampled_from(["30m", "2s", "1h30m", "0s", "x", "{{t}}"]), NUMBERISH, ANY_VALUE
    ),
    "on_stall": st.one_of(st.sampled_from(["stop", "report", "kill"]), ANY_VALUE),
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
                "artifacts": ANY_VALUE,
                "files": ANY_VALUE,
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
    "git": st.one_of(
        st.fixed_dictionaries(
            {}, optional={"commit": SHORT_TEXT, "version": SHORT_TEXT, "repo": SHORT_TEXT}
        ),
        ANY_VALUE,
    ),
    "builder": ANY_VALUE,
    "registry": ANY_VALUE,
    "author": ANY_VALUE,
    "run_id": ANY_VALUE,  # W&B's spec keys that mean nothing here: accepted with a note
    "sweep_id": ANY_VALUE,
    "additional_services": ANY_VALUE,
}
assert set(LAUNCH_SPEC_FIELDS) >= SPEC_KEYS, sorted(SPEC_KEYS - set(LAUNCH_SPEC_FIELDS))
assert {"args", "run_config", "entry_point", "dockerfile", "artifacts", "files"} >= OVERRIDE_KEYS
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
        text.map(lambda t: ("inline", argv_safe(t))),
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


def config_value(seed: Seed, arg: Any) -> str:
    if isinstance(arg, ConfigFile):
        return arg.make(seed.work, f"cfg{next(seed.names)}")
    return str(arg[1])


SET_VALUE = st.one_of(ARG_TEXT, st.builds(to_json, ANY_VALUE, st.just(False)), NUMBERISH.map(str))
SET_PAIR = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["lr", "epochs", " lr ", "a.b"]), SET_VALUE),
    st.builds(lambda k, v: f"{k}={v}", ARG_TEXT, SET_VALUE),
    st.integers(1, 5).flatmap(lambda i: ARG_TEXT if i == 1 else st.just("lr=1")),  # maybe no '='
).map(argv_safe)
SET_VAR = st.one_of(
    st.builds(
        lambda k, v: f"{k}={v}",
        st.sampled_from(["size", "n"]),
        st.one_of(st.sampled_from(["small", "large", "1", "4", "2.0", " 3"]), NUMBERISH.map(str)),
    ),
    st.builds(lambda k, v: f"{k}={v}", TEMPLATE_NAMES, st.one_of(ARG_TEXT, NUMBERISH.map(str))),
    ARG_TEXT,
).map(argv_safe)


def mostly(
    good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any], one_in: int = 4
) -> st.SearchStrategy[Any]:
    """``bad`` one time in ``one_in``, else ``good``: one bad input at a time gets deep."""
    return st.integers(1, one_in).flatmap(lambda i: bad if i == 1 else good)


def sometimes(strategy: st.SearchStrategy[Any], one_in: int = 4) -> st.SearchStrategy[Any]:
    """The strategy one time in ``one_in``, else None: most examples leave the option out,
    so that they get past it to the checks after it."""
    return mostly(st.none(), strategy, one_in)


NUMBER_TEXT = st.one_of(
    NUMBERISH.map(str),
    st.sampled_from(["1e999", "-1e999", "nan", "inf", "١٢", "²", "+5", "--5", "1_0", " 3 ", "0x1"]),
    st.from_regex(r"[+-]?\d{1,6000}(\.\d{0,20})?", fullmatch=True),
    ARG_TEXT,
)


def run_id_arg(seed: Seed) -> st.SearchStrategy[str]:
    real = seed.run_id
    return st.one_of(
        ARG_TEXT,
        st.sampled_from(
            [real, real[:3], real.upper(), real[:3].upper(), "_" * 8, "_", "%", real[0] + "_",
             real[:2] + "%", real + "x", real[:-1]]
        ),
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
