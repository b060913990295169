"""The import rule, read from the source with ``ast``: cli -> core -> store.

- The CLI (``launchctl/cli``) calls the core only: it never imports the store, a runner
  or the builder, and it never looks inside the store handle it gets from the core
  (``launchctl.service.open_store``): it only hands it back to core functions.
- The core (every other module of ``launchctl``, the agent included) may import the store.
- Runners and the builder never import the store (nor the agent or the CLI): what they
  need comes in their ``Launch`` or ``BuildRequest``.
- The store imports only its own modules and a few leaves that hold no policy: errors,
  paths, identity, the state vocabulary (``states``) and the package's version. Those
  leaves import nothing else from launchctl at run time, so the store has no cycle.
- Nothing but the CLI and ``__main__`` imports the CLI.

Every import counts: module level, inside functions (lazy imports), under
``if TYPE_CHECKING:``, and ``importlib.import_module("launchctl...")`` with a literal name.
"""

from __future__ import annotations

import ast
import functools
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import launchctl

PACKAGE = Path(launchctl.__file__).resolve().parent
ROOT = PACKAGE.parent

CLI = "launchctl.cli"
STORE = "launchctl.store"
AGENT = "launchctl.agent"
RUNNERS = "launchctl.runners"
BUILDER = "launchctl.images"
# What the store may import besides itself: leaves with no policy in them.
STORE_MAY_IMPORT = frozenset(
    {"launchctl", "launchctl.errors", "launchctl.paths", "launchctl.identity", "launchctl.states"}
)


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. launchctl.cli.runs
    target: str  # the imported launchctl module, e.g. launchctl.store
    line: int
    type_only: bool  # under ``if TYPE_CHECKING:``

    def __str__(self) -> str:
        where = self.module.replace(".", "/")
        kind = " (type only)" if self.type_only else ""
        return f"{where}:{self.line} imports {self.target}{kind}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str) -> bool:
    """Whether ``name`` (launchctl.x.y) is a module or package in the source tree."""
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _targets(node: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: resolved against the importing module's package
            package = module.split(".")
            if not is_package:
                package.pop()
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, *([base] if base else [])])
        for alias in node.names:
            full = f"{base}.{alias.name}"
            yield full if is_module(full) else base
    elif (
        isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__"))
        )
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        yield node.args[0].value


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Line numbers inside ``if TYPE_CHECKING:`` blocks."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
            (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
            or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
        ):
            for child in node.body:
                for sub in ast.walk(child):
                    if hasattr(sub, "lineno"):
                        lines.add(sub.lineno)
    return lines


def sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def imports_in(path: Path) -> list[Import]:
    module = module_name(path)
    tree = parse(path)
    typed = _type_checking_lines(tree)
    found = []
    for node in ast.walk(tree):
        for target in _targets(node, module, path.name == "__init__.py"):
            if target == "launchctl" or target.startswith("launchctl."):
                line = getattr(node, "lineno", 0)
                found.append(Import(module, target, line, line in typed))
    return found


@functools.cache
def _imports_of_tree() -> tuple[Import, ...]:
    return tuple(imp for path in sources() for imp in imports_in(path))


def all_imports() -> list[Import]:
    """Every launchctl import in launchctl/ (read once per test session)."""
    return list(_imports_of_tree())


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _report(bad: list[Import]) -> str:
    return "\n".join(str(b) for b in bad)


def test_the_reader_sees_lazy_and_type_only_imports() -> None:
    """The rules below are only as good as the reader: it finds imports anywhere."""
    text = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from launchctl.store import Store\n"
        "def f():\n"
        "    import importlib\n"
        "    from launchctl import store, jobs\n"
        "    importlib.import_module('launchctl.runners.local_process')\n"
        "    from . import output\n"
    )
    tree = ast.parse(text)
    typed = _type_checking_lines(tree)
    got = [
        (target, node.lineno in typed)
        for node in ast.walk(tree)
        for target in _targets(node, "launchctl.cli.runs", False)
        if target.startswith("launchctl")
    ]
    assert sorted(got) == sorted(
        [
            ("launchctl.store", True),
            ("launchctl.store", False),
            ("launchctl.jobs", False),
            ("launchctl.runners.local_process", False),
            ("launchctl.cli.output", False),
        ]
    )


def test_every_layer_has_modules() -> None:
    """A rename that leaves a rule pointing at nothing fails here, not silently."""
    modules = {module_name(p) for p in sources()}
    for package in (CLI, STORE, AGENT, RUNNERS, BUILDER, *STORE_MAY_IMPORT):
        assert package in modules, f"{package} is not a module of launchctl any more"


def test_the_cli_never_imports_the_store_a_runner_or_the_builder() -> None:
    bad = [
        imp
        for imp in all_imports()
        if within(imp.module, CLI) and any(within(imp.target, p) for p in (STORE, RUNNERS, BUILDER))
    ]
    assert not bad, "the CLI calls the core only:\n" + _report(bad)


def test_only_the_cli_imports_the_cli() -> None:
    bad = [
        imp
        for imp in all_imports()
        if within(imp.target, CLI)
        and not within(imp.module, CLI)
        and imp.module != "launchctl.__main__"
    ]
    assert not bad, "the core never imports the CLI:\n" + _report(bad)


def test_runners_and_the_builder_never_import_the_store_the_agent_or_the_cli() -> None:
    bad = [
        imp
        for imp in all_imports()
        if any(within(imp.module, p) for p in (RUNNERS, BUILDER))
        and any(within(imp.target, p) for p in (STORE, AGENT, CLI))
    ]
    assert not bad, "runners and the builder get what they need in their request:\n" + _report(bad)


def reached_from(start: str, imports: list[Import]) -> dict[str, str | None]:
    """Every module that importing ``start`` may load (lazy imports included), each with the
    module that imports it: importing ``a.b.c`` loads ``a`` and ``a.b`` too."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        graph.setdefault(imp.module, set()).add(imp.target)
    parent: dict[str, str | None] = {start: None}
    todo = [start]
    while todo:
        module = todo.pop()
        for target in sorted(graph.get(module, ())):
            parts = target.split(".")
            for n in range(1, len(parts) + 1):
                name = ".".join(parts[:n])
                if name not in parent:
                    parent[name] = module
                    todo.append(name)
    return parent


def _chain(parent: dict[str, str | None], module: str) -> str:
    chain = [module]
    while (up := parent[chain[-1]]) is not None:
        chain.append(up)
    return " <- ".join(chain)


def test_runners_and_the_builder_never_reach_the_store_through_another_module() -> None:
    imports = all_imports()
    bad = []
    for start in sorted(module_name(p) for p in sources()):
        if not any(within(start, p) for p in (RUNNERS, BUILDER)):
            continue
        parent = reached_from(start, imports)
        bad += [_chain(parent, m) for m in parent if within(m, STORE)][:1]
    assert not bad, "runners and the builder load the store:\n" + "\n".join(bad)


def test_no_two_modules_import_each_other() -> None:
    """A pair that imports each other (even lazily) holds one idea in two places; a package
    and its own submodules (an ``__init__`` that re-exports) are the exception."""
    edges = {(i.module, i.target) for i in all_imports() if i.module != i.target}
    bad = sorted(
        f"{a} <-> {b}"
        for a, b in edges
        if a < b and (b, a) in edges and not (within(a, b) or within(b, a))
    )
    assert not bad, "import cycles:\n" + "\n".join(bad)


def test_the_store_imports_only_itself_and_leaves_without_policy() -> None:
    bad = [
        imp
        for imp in all_imports()
        if within(imp.module, STORE)
        and not within(imp.target, STORE)
        and imp.target not in STORE_MAY_IMPORT
    ]
    assert not bad, "the store never imports core policy:\n" + _report(bad)


def test_the_leaves_the_store_imports_import_no_other_launchctl_module() -> None:
    """So the store never pulls in policy through a leaf, and has no import cycle (a type-only
    import of the store, as ``states`` makes for ``move``'s signature, is no cycle)."""
    bad = [
        imp
        for imp in all_imports()
        if imp.module in STORE_MAY_IMPORT
        and imp.module != "launchctl"
        and not imp.type_only
        and imp.target not in STORE_MAY_IMPORT
    ]
    assert not bad, "a leaf the store imports must stay a leaf:\n" + _report(bad)


def _store_handles(tree: ast.Module) -> set[str]:
    """Names in a CLI module that hold the store: ``store`` parameters, and names bound to
    what ``open_store()`` or ``another_connection()`` return."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.arg == "store":
            names.add(node.arg)
        elif isinstance(node, ast.Assign) and _opens_store(node.value):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _opens_store(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("open_store", "another_connection")
    )


def store_reads(tree: ast.Module) -> list[ast.Attribute]:
    """Every ``.attribute`` read on a store handle in ``tree``."""
    handles = _store_handles(tree)
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and (
            _opens_store(node.value)
            or (isinstance(node.value, ast.Name) and node.value.id in handles)
        )
    ]


def test_the_cli_never_looks_inside_the_store() -> None:
    """No ``store.runs.get(...)`` nor ``open_store().queues.all()`` in the CLI: it passes
    the handle to the core and reads what the core returns."""
    bad = [
        f"{path.relative_to(ROOT)}:{node.lineno} reads .{node.attr} of the store"
        for path in sources()
        if within(module_name(path), CLI)
        for node in store_reads(parse(path))
    ]
    assert not bad, "the CLI calls the core only:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    "text",
    [
        "def f(store):\n    return store.runs.get(run_id)",
        "def f():\n    return open_store().jobs.all()",
        "def f():\n    s = open_store()\n    return s.db.path",
    ],
)
def test_the_store_check_catches_a_cli_that_reads_the_store(text: str) -> None:
    assert store_reads(ast.parse(text))


def test_the_store_check_lets_the_cli_hand_the_store_on() -> None:
    text = "def f(store):\n    return runs.details(store, run_id), jobs.listing(open_store())"
    assert store_reads(ast.parse(text)) == []


def test_every_package_ships_in_the_wheel() -> None:
    """Each folder of launchctl with an ``__init__.py`` is in pyproject's package list (a
    renamed or new package left out would be missing from an installed launchctl)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    packages = {module_name(p) for p in sources() if p.name == "__init__.py"}
    assert packages - listed == set()
    stale = {p for p in listed - packages if p != "launchctl.templates"}
    assert stale == set(), "listed packages that no longer exist"
