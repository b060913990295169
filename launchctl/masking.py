"""Masking: every secret value in a run's output (or a message) replaced by ``***``.

The runners and the builder mask what a run or a build prints; the agent masks a failure
reason before it is stored. The values come from ``launchctl.secrets``; a ``Masker``
never shows one (its repr only counts them).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

MASK = b"***"


class Masker:
    """Replaces every secret value in a byte stream with ``***``, across chunk boundaries.

    Semantics: scanning left to right, at each position the longest value that starts
    there is replaced and scanning goes on after it; elsewhere bytes pass through. This
    is ``re.sub`` over the values as alternatives, longest first. At most
    ``len(longest) - 1`` bytes are held back between ``feed`` calls; ``flush`` releases
    them. Values are matched as UTF-8 bytes.
    """

    def __init__(self, values: Sequence[str]) -> None:
        encoded = {v.encode("utf-8") for v in values if v}
        ordered = sorted(encoded, key=lambda b: (-len(b), b))
        self._pattern = re.compile(b"|".join(re.escape(v) for v in ordered)) if ordered else None
        self._longest = len(ordered[0]) if ordered else 0
        self._pending = b""

    def __repr__(self) -> str:
        count = 0 if self._pattern is None else self._pattern.pattern.count(b"|") + 1
        return f"Masker({count} values)"

    def feed(self, chunk: bytes) -> bytes:
        """The part of the stream so far that is settled, masked."""
        if self._pattern is None:
            return chunk
        buf = self._pending + chunk
        # A match starting at or before ``last`` is settled: every value fits in ``buf``.
        last = len(buf) - self._longest
        out: list[bytes] = []
        pos = 0
        while pos <= last:
            m = self._pattern.search(buf, pos)
            if m is None or m.start() > last:
                out.append(buf[pos : last + 1])
                pos = last + 1
                break
            out.append(buf[pos : m.start()])
            out.append(MASK)
            pos = m.end()
        self._pending = buf[pos:]
        return b"".join(out)

    def flush(self) -> bytes:
        """The held-back tail, masked; the stream may start again after it."""
        if self._pattern is None:
            return b""
        tail, self._pending = self._pending, b""
        return self._pattern.sub(MASK, tail)

    def mask(self, data: bytes) -> bytes:
        """Mask one whole buffer, apart from the stream (for messages and reasons)."""
        return data if self._pattern is None else self._pattern.sub(MASK, data)

    def mask_text(self, text: str) -> str:
        """Mask one whole string, e.g. a failure reason before it is stored."""
        return self.mask(text.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")
