"""Queue config templates: ``{{name}}`` fields, their definitions, and checked values.

A queue's config may hold ``{{name}}`` anywhere in a string value; its
``template_variables`` define each field in W&B's JSON-Schema shape (``type``,
``enum``, ``minimum``, ``maximum``, ``default``, ``description``). A launch sets
values with ``--set-var``; they are converted to the field's type and checked
here, at launch and again by the agent.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterator
from typing import Any

from launchctl.errors import ConfigError, UsageError
from launchctl.macros import MACRO, Macros

FIELD = re.compile(r"\{\{\s*([A-Za-z_][\w-]*)\s*\}\}")
# A field or a macro: one pass over the admin's text finds both (see render).
TOKEN = re.compile(f"{FIELD.pattern}|{MACRO.pattern}")
TYPES = ("string", "integer", "number")
SCHEMA_KEYS = frozenset({"type", "enum", "minimum", "maximum", "default", "description"})


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def fields(config: Any) -> list[str]:
    """The template fields a config uses, in order of first use (W&B's "Parse configuration")."""
    seen: dict[str, None] = {}
    for text in _strings(config):
        for match in FIELD.finditer(text):
            seen.setdefault(match.group(1))
    return list(seen)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float is no usable limit or value
        return False


def _typed(kind: str, value: Any, name: str) -> Any:
    """Convert a value (often a string from the command line) to the field's type."""
    if kind == "string":
        if isinstance(value, dict | list) or value is None:
            raise UsageError(f"template variable {name} must be a string, got {value!r:.60}")
        return value if isinstance(value, str) else str(value)
    if isinstance(value, bool):
        raise UsageError(f"template variable {name} must be an {kind}, got {value!r}")
    if kind == "integer":
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d{1,18}", value.strip()):
            return int(value)
        raise UsageError(f"template variable {name} must be an integer, got {value!r:.60}")
    if _is_number(value):
        return value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return int(number) if number.is_integer() and "." not in value else number
    raise UsageError(f"template variable {name} must be a number, got {value!r:.60}")


def check_definition(name: str, schema: Any) -> dict[str, Any]:
    """Validate one definition; returns it normalised. Raises ConfigError naming the field."""
    where = f"template variable {name}"
    if not FIELD.fullmatch("{{" + name + "}}"):
        raise ConfigError(f"{where}: invalid name (letters, digits, '_' and '-')")
    if not isinstance(schema, dict):
        raise ConfigError(f"{where}: its definition must be an object")
    unknown = sorted(set(schema) - SCHEMA_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(SCHEMA_KEYS))})"
        )
    kind = schema.get("type")
    if kind not in TYPES:
        raise ConfigError(f"{where}: type must be one of {', '.join(TYPES)}, got {kind!r}")
    out: dict[str, Any] = {"type": kind}
    for bound in ("minimum", "maximum"):
        if bound in schema and schema[bound] is not None:
            if kind == "string":
                raise ConfigError(f"{where}: a string has no {bound}; use enum for options")
            if not _is_number(schema[bound]):
                raise ConfigError(f"{where}: {bound} must be a number")
            out[bound] = schema[bound]
    if "minimum" in out and "maximum" in out and out["minimum"] > out["maximum"]:
        raise ConfigError(f"{where}: minimum {out['minimum']} is above maximum {out['maximum']}")
    if "enum" in schema and schema["enum"] is not None:
        options = schema["enum"]
        if not isinstance(options, list) or not options:
            raise ConfigError(f"{where}: enum must be a non-empty list of options")
        try:
            out["enum"] = [_typed(kind, option, name) for option in options]
        except UsageError as exc:
            raise ConfigError(f"{where}: enum option {exc}") from None
        for option in out["enum"]:
            _check_limits(out, option, name, error=ConfigError, what="enum option")
    if schema.get("description") is not None:
        out["description"] = str(schema["description"])
    if "default" in schema and schema["default"] is not None:
        try:
            default = _typed(kind, schema["default"], name)
        except UsageError as exc:
            raise ConfigError(f"{where}: default {exc}") from None
        _check_limits(out, default, name, error=ConfigError, what="default")
        out["default"] = default
    return out


def _check_limits(
    schema: dict[str, Any],
    value: Any,
    name: str,
    *,
    error: type[Exception] = UsageError,
    what: str = "value",
) -> None:
    if "minimum" in schema and value < schema["minimum"]:
        raise error(
            f"template variable {name}: {what} {value} is below the minimum {schema['minimum']}"
        )
    if "maximum" in schema and value > schema["maximum"]:
        raise error(
            f"template variable {name}: {what} {value} is above the maximum {schema['maximum']}"
        )
    if "enum" in schema and what != "enum option" and value not in schema["enum"]:
        options = ", ".join(str(o) for o in schema["enum"])
        raise error(f"template variable {name}: {what} {value!r} is not one of: {options}")


def check_definitions(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Check a queue config's fields against its ``template_variables``, as one unit."""
    raw = config.get("template_variables") or {}
    if not isinstance(raw, dict):
        raise ConfigError("queue config: template_variables must be an object")
    definitions = {name: check_definition(name, schema) for name, schema in raw.items()}
    body = {k: v for k, v in config.items() if k != "template_variables"}
    missing = [name for name in fields(body) if name not in definitions]
    if missing:
        name = missing[0]
        raise ConfigError(
            f"queue config uses {{{{{name}}}}} but has no definition for it: define it under"
            f' template_variables, e.g. "template_variables": {{"{name}": {{"type": "string"}}}}'
        )
    return definitions


def resolve_values(
    queue: str, definitions: dict[str, dict[str, Any]], given: dict[str, Any]
) -> dict[str, Any]:
    """Typed, checked values for every field: given ones, then defaults."""
    for name in given:
        if name not in definitions:
            raise UsageError(f"Queue {queue} does not support overriding {name}")
    values: dict[str, Any] = {}
    for name, schema in definitions.items():
        if name in given:
            value = _typed(schema["type"], given[name], name)
            _check_limits(schema, value, name)
        elif "default" in schema:
            value = schema["default"]
        else:
            raise UsageError(
                f"queue {queue} needs a value for template variable {name} (it has no default):"
                f" pass --set-var {name}=VALUE"
            )
        values[name] = value
    return values


def render(config: Any, values: dict[str, Any], macros: Macros | None = None) -> Any:
    """Fill the fields in: a whole-value field becomes the typed value, a partial one text.

    With ``macros``, ``${name}`` macros are expanded in the same single pass over the
    admin's text: what a field or a macro puts in is never read again, so a launcher's
    value holding ``${...}`` or ``{{...}}`` stays as typed. Without, macros stay as written.
    """
    if isinstance(config, dict):
        return {k: render(v, values, macros) for k, v in config.items()}
    if isinstance(config, list):
        return [render(v, values, macros) for v in config]
    if isinstance(config, str):
        whole = FIELD.fullmatch(config.strip())
        if whole and whole.group(1) in values:
            return copy.deepcopy(values[whole.group(1)])
        return "".join(text for text, _ in pieces(config, values, macros))
    return config


def pieces(
    text: str, values: dict[str, Any], macros: Macros | None = None
) -> list[tuple[str, bool]]:
    """``text`` rendered, as pieces ``(text, from_launcher)``: True where the piece is a
    value a launcher chose (a template value, a run's name or project), so a caller can
    check where such a value lands (a host path, see launchctl.resolve)."""
    out: list[tuple[str, bool]] = []
    start = 0
    for match in TOKEN.finditer(text):
        out.append((text[start : match.start()], False))
        start = match.end()
        field, macro = match.group(1), match.group(2)
        if field is not None:
            if field in values:
                out.append((str(values[field]), True))
                continue
        elif macros is not None:
            value = macros.value(macro)
            if value is not None:
                out.append((value, macros.from_launcher(macro)))
                continue
        out.append((match.group(0), False))
    out.append((text[start:], False))
    return [piece for piece in out if piece[0]]
