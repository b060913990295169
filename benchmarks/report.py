"""The results: table rows, notes, and the files they are written to (bench.md, bench.json)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from containers import docker_version
from harness import LAUNCHCTL, ROOT, Settings


@dataclass
class Row:
    """One line of the results table."""

    benchmark: str
    launchctl: str
    baseline: str
    baseline_name: str
    difference: str
    target: str
    met: str


@dataclass
class Report:
    """Table rows, notes under the table and every raw number."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


def secs(value: float) -> str:
    """Seconds for the table, to the millisecond."""
    return f"{value:.3f} s"


def met(ok: bool) -> str:
    """A yes/no for the met? column."""
    return "yes" if ok else "**no**"


def render(report: Report) -> str:
    """The results as a markdown table followed by notes."""
    head = [
        "benchmark",
        "launchctl",
        "baseline",
        "baseline name",
        "difference/ratio",
        "target",
        "met?",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(asdict(row).values()) + " |" for row in report.rows]
    lines += ["", *(f"- {note}" for note in report.notes)]
    return "\n".join(lines) + "\n"


def machine() -> dict[str, Any]:
    """Where and with what the numbers were taken."""
    tsp = (
        subprocess.run(["tsp", "-V"], capture_output=True, text=True)
        if shutil.which("tsp")
        else None
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "launchctl": LAUNCHCTL,
        "git_commit": commit or None,
        "tsp": (tsp.stdout + tsp.stderr).strip().splitlines()[0] if tsp else None,
        "docker": docker_version(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_results(report: Report, settings: Settings, quick: bool, elapsed: float) -> str:
    """Write bench.md and bench.json; return the markdown."""
    info = machine()
    mode = "quick" if quick else "full"
    text = f"# launchctl benchmarks ({mode})\n\n" + render(report)
    text += (
        f"- machine: {info['cpus']} CPUs, {info['platform']}, Python {info['python']},"
        f" commit {info['git_commit']}, {info['tsp']}, Docker engine {info['docker']};"
        f" whole run {elapsed:.0f} s.\n"
    )
    settings.out.mkdir(parents=True, exist_ok=True)
    (settings.out / "bench.md").write_text(text)
    data = {
        "mode": mode,
        "elapsed_s": elapsed,
        "machine": info,
        "settings": asdict(settings),
        "rows": [asdict(r) for r in report.rows],
        "raw": report.raw,
    }
    (settings.out / "bench.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    return text
