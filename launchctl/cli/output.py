"""Printing for the CLI: plain tables, JSON, and times. No colours, no heavy imports."""

from __future__ import annotations

import json
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


def line(text: str) -> None:
    """Print one line of plain output, its control characters escaped (``clean``)."""
    sys.stdout.write(clean(text) + "\n")


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> None:
    data = [[("-" if v is None else clean(str(v))) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in data:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=False)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=False))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) for row in data]
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
    secs = (end or time.time()) - start
    if secs < 60:
        return f"{secs:.1f}s"
    return f"{int(secs // 60)}m{int(secs % 60):02d}s"


def err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
