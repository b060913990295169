"""The sweep page's plots: the metric against one parameter, as inline SVG made here.

No JavaScript and no plotting library: a scatter of the scored trials, numbers on a
linear axis, anything else (options, booleans) as evenly spaced categories; the best
trial drawn larger. Every label goes through ``html.escape``: a parameter's value is text
a launcher chose.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

W, H = 320, 200
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 12, 36


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _scale(lo: float, hi: float, a: float, b: float) -> Any:
    span = hi - lo or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def scatter(param: str, metric: str, trials: list[dict[str, Any]], best: Any) -> str:
    """``<svg class="plot" data-param=P>``: ``metric`` (y) against ``param`` (x)."""
    points: list[tuple[Any, float, dict[str, Any]]] = []
    for trial in trials:
        x, y = trial["params_flat"].get(param), _num(trial.get("metric"))
        if x is not None and y is not None:
            points.append((x, y, trial))
    head = (
        f'<svg class="plot" data-param="{escape(param)}" xmlns="http://www.w3.org/2000/svg"'
        f' width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img"'
        f' aria-label="{escape(metric)} against {escape(param)}">'
    )
    parts = [head, f"<title>{escape(metric)} against {escape(param)}</title>"]
    x0, x1, y0, y1 = float(LEFT), float(W - RIGHT), float(H - BOTTOM), float(TOP)
    parts.append(
        f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="none" stroke="#bbb"/>'
    )
    parts.append(
        f'<text x="{(x0 + x1) / 2}" y="{H - 4}" text-anchor="middle" font-size="11">'
        f"{escape(param)}</text>"
    )
    if not points:
        parts.append(
            f'<text x="{(x0 + x1) / 2}" y="{(y0 + y1) / 2}" text-anchor="middle"'
            ' font-size="11" fill="#777">no scored trials yet</text></svg>'
        )
        return "".join(parts)
    ys = [y for _, y, _ in points]
    ylo, yhi = min(ys), max(ys)
    sy = _scale(ylo, yhi, y0 - 6, y1 + 6)
    numeric = all(_num(x) is not None for x, _, _ in points)
    if numeric:
        xs = [float(x) for x, _, _ in points]
        xlo, xhi = min(xs), max(xs)
        sx = _scale(xlo, xhi, x0 + 8, x1 - 8)
        place = lambda x: sx(float(x))  # noqa: E731
        ticks = [(x0 + 8, _fmt(xlo)), (x1 - 8, _fmt(xhi))]
    else:
        cats = list(dict.fromkeys(str(x) for x, _, _ in points))
        step = (x1 - x0) / (len(cats) + 1)
        place = lambda x: x0 + step * (cats.index(str(x)) + 1)  # noqa: E731
        ticks = [(x0 + step * (i + 1), c[:12]) for i, c in enumerate(cats[:8])]
    for tx, label in ticks:
        parts.append(
            f'<text x="{tx:.1f}" y="{y0 + 14}" text-anchor="middle" font-size="10">'
            f"{escape(label)}</text>"
        )
    for ty, value in ((y0 - 6, ylo), (y1 + 6, yhi)):
        parts.append(
            f'<text x="{x0 - 4}" y="{ty + 3:.1f}" text-anchor="end" font-size="10">'
            f"{escape(_fmt(value))}</text>"
        )
    for x, y, trial in points:
        is_best = bool(trial.get("best")) or trial is best  # the report marks its best
        mark = ' class="best"' if is_best else ""
        parts.append(
            f'<circle cx="{place(x):.1f}" cy="{sy(y):.1f}" r="{6 if is_best else 3.5}"'
            f' fill="{"#d9480f" if is_best else "#1c7ed6"}"'
            f"{mark}>"
            f"<title>trial {escape(str(trial.get('seq')))}: {escape(metric)} {_fmt(y)}"
            f"</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)
