"""A small GraphQL reader and executor for the stand-in W&B server.

It is enough for the documents W&B's clients send (wandb 0.31.0 and its wandb-core):
operations with variables, fields with arguments and aliases, named fragments, inline
fragments, ``@include``/``@skip``. No schema and no type checks: an object is a ``dict``
whose values are plain data or callables taking the field's arguments (``dict``) and
returning data; a field with a sub-selection is resolved again on what it returned (a
list is resolved item by item). A field an object does not have answers ``null`` and is
reported to ``on_unknown`` so the stand-in's log shows what a client asked that it lacks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class GraphQLError(Exception):
    """An error reported in the response's ``errors`` list (the field answers null)."""


# ---------------------------------------------------------------- reading

_TOKEN = re.compile(
    r"""
    (?P<skip>[\s,\ufeff]+|\#[^\n]*)
  | (?P<block>\"\"\"(?:[^"\\]|\\.|"(?!""))*\"\"\")
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<spread>\.\.\.)
  | (?P<punct>[!$()\:=@\[\]{}|&])
  | (?P<name>[_A-Za-z][_0-9A-Za-z]*)
    """,
    re.VERBOSE,
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise GraphQLError(f"Syntax Error: unexpected character {text[pos]!r} at {pos}")
        pos = m.end()
        kind = m.lastgroup or ""
        if kind != "skip":
            out.append((kind, m.group()))
    out.append(("eof", ""))
    return out


@dataclass
class Field:
    name: str
    alias: str | None
    args: dict[str, Any]
    directives: list[tuple[str, dict[str, Any]]]
    selections: list[Any] | None


@dataclass
class Spread:
    name: str
    directives: list[tuple[str, dict[str, Any]]]


@dataclass
class Inline:
    type_condition: str | None
    directives: list[tuple[str, dict[str, Any]]]
    selections: list[Any]


@dataclass
class Var:
    name: str


@dataclass
class Operation:
    kind: str  # query | mutation | subscription
    name: str | None
    defaults: dict[str, Any]
    selections: list[Any]


@dataclass
class Document:
    operations: list[Operation] = field(default_factory=list)
    fragments: dict[str, tuple[str, list[Any]]] = field(default_factory=dict)

    def operation(self, name: str | None) -> Operation:
        if name:
            for op in self.operations:
                if op.name == name:
                    return op
            raise GraphQLError(f'Unknown operation named "{name}".')
        if len(self.operations) != 1:
            raise GraphQLError("Must provide operation name if query contains multiple operations.")
        return self.operations[0]


class _Reader:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self, value: str | None = None, kind: str | None = None) -> bool:
        k, v = self.toks[self.i]
        return (value is None or v == value) and (kind is None or k == kind)

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        k, v = self.toks[self.i]
        if (value is not None and v != value) or (kind is not None and k != kind):
            raise GraphQLError(f"Syntax Error: expected {value or kind}, found {v or 'end'!r}")
        self.i += 1
        return v

    def document(self) -> Document:
        doc = Document()
        while not self.peek(kind="eof"):
            if self.peek("{"):
                doc.operations.append(Operation("query", None, {}, self.selection_set()))
            elif self.peek("fragment"):
                self.take()
                name = self.take(kind="name")
                self.take("on")
                cond = self.take(kind="name")
                self.directives()
                doc.fragments[name] = (cond, self.selection_set())
            else:
                kind = self.take(kind="name")
                if kind not in ("query", "mutation", "subscription"):
                    raise GraphQLError(f"Syntax Error: unexpected {kind!r}")
                name = self.take(kind="name") if self.peek(kind="name") else None
                defaults = self.variable_definitions()
                self.directives()
                doc.operations.append(Operation(kind, name, defaults, self.selection_set()))
        return doc

    def variable_definitions(self) -> dict[str, Any]:
        defaults: dict[str, Any] = {}
        if not self.peek("("):
            return defaults
        self.take("(")
        while not self.peek(")"):
            self.take("$")
            name = self.take(kind="name")
            self.take(":")
            self.type_ref()
            if self.peek("="):
                self.take("=")
                defaults[name] = self.value()
            self.directives()
        self.take(")")
        return defaults

    def type_ref(self) -> None:
        if self.peek("["):
            self.take("[")
            self.type_ref()
            self.take("]")
        else:
            self.take(kind="name")
        if self.peek("!"):
            self.take("!")

    def selection_set(self) -> list[Any]:
        self.take("{")
        out: list[Any] = []
        while not self.peek("}"):
            if self.peek(kind="spread"):
                self.take()
                if self.peek("on"):
                    self.take()
                    cond = self.take(kind="name")
                    out.append(Inline(cond, self.directives(), self.selection_set()))
                elif self.peek(kind="name"):
                    out.append(Spread(self.take(), self.directives()))
                else:
                    out.append(Inline(None, self.directives(), self.selection_set()))
                continue
            name = self.take(kind="name")
            alias = None
            if self.peek(":"):
                self.take(":")
                alias, name = name, self.take(kind="name")
            args = self.arguments()
            directives = self.directives()
            subs = self.selection_set() if self.peek("{") else None
            out.append(Field(name, alias, args, directives, subs))
        self.take("}")
        return out

    def arguments(self) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if self.peek("("):
            self.take("(")
            while not self.peek(")"):
                name = self.take(kind="name")
                self.take(":")
                args[name] = self.value()
            self.take(")")
        return args

    def directives(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        while self.peek("@"):
            self.take("@")
            out.append((self.take(kind="name"), self.arguments()))
        return out

    def value(self) -> Any:
        kind, v = self.toks[self.i]
        if v == "$":
            self.take()
            return Var(self.take(kind="name"))
        if v == "[":
            self.take()
            items = []
            while not self.peek("]"):
                items.append(self.value())
            self.take("]")
            return items
        if v == "{":
            self.take()
            obj = {}
            while not self.peek("}"):
                key = self.take(kind="name")
                self.take(":")
                obj[key] = self.value()
            self.take("}")
            return obj
        self.i += 1
        if kind == "number":
            return float(v) if any(c in v for c in ".eE") else int(v)
        if kind == "string":
            import json

            return json.loads(v)
        if kind == "block":
            return v[3:-3]
        if kind == "name":
            return {"true": True, "false": False, "null": None}.get(v, v)  # enums are strings
        raise GraphQLError(f"Syntax Error: unexpected {v!r}")


_PARSED: dict[str, Document] = {}


def parse(text: str) -> Document:
    doc = _PARSED.get(text)
    if doc is None:
        doc = _Reader(text).document()
        if len(_PARSED) < 512:
            _PARSED[text] = doc
    return doc


# ---------------------------------------------------------------- executing


def _bind(value: Any, variables: dict[str, Any]) -> Any:
    if isinstance(value, Var):
        return variables.get(value.name)
    if isinstance(value, list):
        return [_bind(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _bind(v, variables) for k, v in value.items()}
    return value


def execute(
    text: str,
    variables: dict[str, Any] | None,
    operation_name: str | None,
    roots: dict[str, dict[str, Any]],
    on_unknown: Callable[[str, str], None] = lambda type_name, field_name: None,
) -> tuple[Operation, dict[str, Any] | None, list[dict[str, Any]]]:
    """Run one GraphQL request against ``roots`` ({"query": obj, "mutation": obj}).

    Returns the operation, ``data`` and ``errors`` (GraphQL's response members)."""
    doc = parse(text)
    op = doc.operation(operation_name)
    bound = {**op.defaults, **(variables or {})}
    errors: list[dict[str, Any]] = []

    def included(directives: list[tuple[str, dict[str, Any]]]) -> bool:
        for name, args in directives:
            cond = bool(_bind(args.get("if"), bound))
            if (name == "include" and not cond) or (name == "skip" and cond):
                return False
        return True

    def collect(obj: dict[str, Any], selections: list[Any], out: list[Field]) -> None:
        for sel in selections:
            if not included(sel.directives):
                continue
            if isinstance(sel, Field):
                out.append(sel)
                continue
            if isinstance(sel, Spread):
                if sel.name not in doc.fragments:
                    raise GraphQLError(f'Unknown fragment "{sel.name}".')
                cond, subs = doc.fragments[sel.name]
            else:
                cond, subs = sel.type_condition, sel.selections
            typename = obj.get("__typename")
            if cond is None or typename is None or cond == typename:
                collect(obj, subs, out)

    def resolve(obj: Any, selections: list[Any], path: list[Any]) -> Any:
        if obj is None:
            return None
        if isinstance(obj, list):
            return [resolve(item, selections, [*path, i]) for i, item in enumerate(obj)]
        fields: list[Field] = []
        collect(obj, selections, fields)
        result: dict[str, Any] = {}
        for f in fields:
            key = f.alias or f.name
            if f.name == "__typename":
                result[key] = obj.get("__typename")
                continue
            if f.name not in obj:
                typename = str(obj.get("__typename", "?"))
                on_unknown(typename, f.name)
                if typename in ("Query", "Mutation"):
                    errors.append(
                        {
                            "message": f'Cannot query field "{f.name}" on type "{typename}".',
                            "path": [key],
                        }
                    )
                result.setdefault(key, None)
                continue
            value = obj[f.name]
            try:
                if callable(value):
                    value = value(_bind(f.args, bound))
                if f.selections is not None:
                    value = resolve(value, f.selections, [*path, key])
            except GraphQLError as exc:
                errors.append({"message": str(exc), "path": [*path, key]})
                value = None
            if key in result and isinstance(result[key], dict) and isinstance(value, dict):
                result[key].update(value)  # the same field selected twice: merge
            else:
                result[key] = value
        return result

    root = roots.get(op.kind)
    if root is None:
        raise GraphQLError(f"Schema is not configured for {op.kind}s.")
    data = resolve(root, op.selections, [])
    return op, data, errors
