"""Printing for the CLI: tables, JSON, and times. No heavy imports.

On a terminal, run states are coloured and table headers bold (issue 12, item 10); the
text is plain when stdout is not a terminal, when ``NO_COLOR`` is set to anything but
the empty string (no-color.org) or when ``TERM=dumb``. ``FORCE_COLOR`` or
``CLICOLOR_FORCE`` (anything but empty or ``0``) turns colour on anyway, a pipe
included. JSON is never coloured. Widths are of the visible text, so colour never
moves a column.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


# Characters a terminal acts on rather than shows: C0 and C1 controls (ESC starts a
# sequence that can retitle the window, clear the screen or fake output), DEL, line and
# paragraph separators, bidirectional overrides, and lone surrogates (not printable text).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text: str) -> str:
    """Text from a record, safe to print on a terminal: control characters as ``\\xNN``."""
    return _UNSAFE.sub(_escape, text)


def line(text: str, *, state: str | None = None) -> None:
    """Print one line of plain output, its control characters escaped (``clean``); a line
    ending in the run state ``state`` shows it coloured on a terminal."""
    shown = clean(text)
    if state and colour() and shown.endswith(state):
        shown = shown[: -len(state)] + paint(state, STATE_STYLES.get(state))
    sys.stdout.write(shown + "\n")


def _forced(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


@functools.cache
def colour() -> bool:
    """Whether stdout gets colour: a terminal, no ``NO_COLOR``, no ``TERM=dumb``; or forced."""
    if _forced("FORCE_COLOR") or _forced("CLICOLOR_FORCE"):
        return True
    if os.environ.get("NO_COLOR", "") != "" or os.environ.get("TERM") == "dumb":
        return False
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stdout
        return False


# SGR codes: what each run state looks like on a terminal.
_RESET = "\x1b[0m"
_BOLD = "1"
STATE_STYLES = {
    "queued": "2",  # dim: nothing has happened yet
    "claimed": "36",  # cyan: under way
    "building": "36",
    "starting": "36",
    "running": "36",
    "finished": "32",  # green
    "failed": "31",  # red
    "stopped": "33",  # yellow
    "cancelled": "33",
    "preempted": "35",  # magenta: will be picked up again
}
_ANSI = re.compile("\x1b\\[[0-9;]*m")


def paint(text: str, sgr: str | None) -> str:
    """``text`` in the SGR style ``sgr`` when colour is on; as it is otherwise."""
    if not sgr or not colour():
        return text
    return f"\x1b[{sgr}m{text}{_RESET}"


def state(name: str) -> str:
    """A run state's name, coloured on a terminal (``STATE_STYLES``)."""
    return paint(name, STATE_STYLES.get(name))


def width(text: str) -> int:
    """Columns ``text`` takes on a terminal: wide (East Asian) characters take two,
    combining marks none."""
    if text.isascii():
        return len(text)
    import unicodedata  # only for non-ASCII text: a C module, cheap

    return sum(
        0
        if unicodedata.combining(ch)
        else 2
        if unicodedata.east_asian_width(ch) in ("W", "F")
        else 1
        for ch in text
    )


def visible_len(text: str) -> int:
    """Width of ``text`` on screen: SGR sequences take none."""
    return width(_ANSI.sub("", text))


def _cell_style(header: str, cell: str) -> str | None:
    """A ``state`` column is coloured by its value; a column named after a state counts
    runs in it (``launchctl status``'s queue table), and a count over 0 gets its colour."""
    if header == "state":
        return STATE_STYLES.get(cell)
    if header in STATE_STYLES and cell not in ("0", "-"):
        return STATE_STYLES[header]
    return None


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> None:
    data = [[("-" if v is None else clean(str(v))) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in data:
        widths = [max(w, width(c)) for w, c in zip(widths, row, strict=False)]
    on = colour()

    def cell(text: str, size: int, style: str | None) -> str:
        pad = " " * (size - width(text))  # widths are of the plain text: colour takes none
        return (paint(text, style) if on else text) + pad

    lines = ["  ".join(cell(h.upper(), w, _BOLD) for h, w in zip(headers, widths, strict=False))]
    lines += [
        "  ".join(
            cell(c, w, _cell_style(h, c)) for c, w, h in zip(row, widths, headers, strict=False)
        )
        for row in data
    ]
    sys.stdout.write("\n".join(text.rstrip() for text in lines) + "\n")


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def ago(ts: float | None) -> str:
    if ts is None:
        return "-"
    delta = max(0.0, time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{int(delta // size)}{unit} ago"
    return f"{int(delta)}s ago"


def duration(start: float | None, end: float | None) -> str:
    if start is None:
        return "-"
    secs = max(0.0, (end or time.time()) - start)
    if secs < 60:
        return f"{secs:.1f}s"
    if secs < 3600:
        return f"{int(secs // 60)}m{int(secs % 60):02d}s"
    if secs < 86400:
        return f"{int(secs // 3600)}h{int(secs % 3600 // 60):02d}m"
    return f"{int(secs // 86400)}d{int(secs % 86400 // 3600):02d}h"


def err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
