"""Read a config given as a file path or as an inline JSON/YAML string."""

from __future__ import annotations

import functools
import json
from typing import Any

from launchctl.errors import ConfigError
from launchctl.paths import user_path

MAX_CONFIG_BYTES = 4 * 1024 * 1024
_FILE_SUFFIXES = (".json", ".yaml", ".yml")


def _plain(exc: ValueError) -> str:
    if "digits" in str(exc):
        return "a number is too long (over 4300 digits)"
    return str(exc).split(";")[0]


# How deep a config may nest (mappings and sequences, block or flow). Checked while the
# YAML is read, before the cost grows: PyYAML's scanner slows down with each level, so a
# file of 100,000 "[" took minutes before it failed.
MAX_DEPTH = 100


class _Refused(Exception):
    def __init__(self, problem: str, line: int, column: int) -> None:
        super().__init__(problem)
        self.problem = f"{problem} at line {line + 1}, column {column + 1}"


@functools.cache
def _guarded_loader() -> Any:
    """A SafeLoader that stops at ``MAX_DEPTH`` levels and at the first alias."""
    import yaml

    class GuardedLoader(yaml.SafeLoader):
        def _check_depth(self) -> None:
            if len(self.indents) + self.flow_level > MAX_DEPTH:
                raise _Refused(
                    f"nested too deeply (over {MAX_DEPTH} levels)", self.line, self.column
                )

        def fetch_flow_collection_start(self, TokenClass: Any) -> None:
            super().fetch_flow_collection_start(TokenClass)
            self._check_depth()

        def add_indent(self, column: int) -> bool:
            added: bool = super().add_indent(column)
            self._check_depth()
            return added

        def fetch_alias(self) -> None:
            # Aliases (*name) can expand a few hundred bytes into billions of nodes.
            raise _Refused("YAML aliases (*name) are not supported", self.line, self.column)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            # A plain key that YAML 1.1 reads as a boolean (``on:``, ``off:``, ``yes:``)
            # stays the word written: a hook's ``on: [failed]`` is a key named "on" (as
            # GitHub Actions reads its ``on:``), never True. Values are unchanged.
            for key, _ in node.value:
                plain = isinstance(key, yaml.ScalarNode) and key.style is None
                if plain and key.tag == "tag:yaml.org,2002:bool":
                    key.tag = "tag:yaml.org,2002:str"
            return super().construct_mapping(node, deep)

    return GuardedLoader


def _parse_yaml(text: str, where: str) -> Any:
    import yaml

    try:
        return yaml.load(text, Loader=_guarded_loader())
    except _Refused as exc:
        raise ConfigError(f"{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{where}: {problem}{at}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer too long to convert
        raise ConfigError(f"{where}: {_plain(exc)}") from None


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{where}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer too long to convert
        raise ConfigError(f"{where}: {_plain(exc)}") from None


def _check_keys(value: Any, where: str, at: str, depth: int = 0) -> None:
    """Every key at every level is a string (YAML allows others; JSON would change them)."""
    if depth > 100:
        raise ConfigError(f"{where}: nested too deeply")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                place = f" in {at}" if at else ""
                raise ConfigError(f"{where}: keys must be strings, got {key!r:.40}{place}")
            _check_keys(item, where, f"{at}.{key}" if at else key, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_keys(item, where, at, depth + 1)


def load_mapping(value: str, what: str = "config") -> dict[str, Any]:
    """Parse ``value``: a path to a .json/.yaml file, or inline JSON (or YAML) text.

    Always returns a dict; anything else is a ``ConfigError`` naming ``what``.
    """
    text: str
    where: str
    path = user_path(value)
    looks_like_file = value.lower().endswith(_FILE_SUFFIXES) and "{" not in value
    is_file = False
    try:
        is_file = len(value) < 4096 and path.is_file()
    except OSError:
        is_file = False
    if is_file:
        try:
            if path.stat().st_size > MAX_CONFIG_BYTES:
                raise ConfigError(f"{what} file {value} is over {MAX_CONFIG_BYTES >> 20} MiB")
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{what} file {value} is not UTF-8 text") from None
        except OSError as exc:
            raise ConfigError(f"cannot read {what} file {value}: {exc.strerror}") from None
        where = f"{what} file {value}"
        if not text.strip():
            raise ConfigError(f"{where} is empty")
        data = (
            _parse_json(text, where) if path.suffix.lower() == ".json" else _parse_yaml(text, where)
        )
    elif looks_like_file:
        raise ConfigError(f"{what} file {value} does not exist")
    else:
        where = what
        if not value.strip():
            raise ConfigError(f"{what} is empty")
        stripped = value.lstrip()
        data = _parse_json(value, where) if stripped.startswith(("{", "[")) else None
        if data is None:
            data = _parse_yaml(value, where)
            if isinstance(data, str | int | float | bool) or data is None:
                raise ConfigError(
                    f"{what} must be a JSON/YAML object or a path to a file; got {value!r:.60}"
                )
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a JSON/YAML object, not {type(data).__name__}")
    _check_keys(data, where, "")
    try:
        json.dumps(data, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{where}: holds text that is not valid UTF-8") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: holds a value JSON cannot store ({exc})") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply") from None
    return data
