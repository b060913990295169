"""Benchmark 1, startup: ``launchctl --help`` and ``launchctl runs list`` against
``python -c pass``; and the same two commands from the single file ``nox -s dist`` builds
(issue 17) against the pip install's."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from harness import (
    LAUNCHCTL,
    PYTHON,
    ROOT,
    Settings,
    create_job,
    enqueue,
    fresh_home,
    make_code_dir,
    median,
    timed,
)
from report import Report, Row, met, secs

STARTUP_TARGET_S = 0.15
SINGLE_FILE_TARGET = 1.5  # warm start-up of dist/launchctl against the pip install's (issue 17)


def single_file() -> Path | None:
    """dist/launchctl as scripts/dist.py builds it (cached); None when it cannot be built."""
    spec = importlib.util.spec_from_file_location("launchctl_dist", ROOT / "scripts" / "dist.py")
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        return Path(module.build_zipapp())
    except Exception as exc:  # no package index on a first build: say so, keep the rest
        print(f"benchmarks: startup: no single file ({exc})", file=sys.stderr)
        return None


def bench_startup(settings: Settings, report: Report) -> None:
    """Wall time of CLI commands against a bare interpreter start, interleaved per repetition."""
    with fresh_home("startup") as (tmp, env):
        create_job(env, make_code_dir(tmp), "startup", ["true"])
        enqueue(env, "startup", 50)  # a full first page for `runs list`
        commands = {
            "launchctl --help": [LAUNCHCTL, "--help"],
            "launchctl runs list": [LAUNCHCTL, "runs", "list"],
            "python -c pass": [PYTHON, "-c", "pass"],
        }
        file = single_file()
        if file is not None:  # the same interpreter as the pip install's console script
            env["XDG_CACHE_HOME"] = str(tmp / "cache")  # unpacked there by the warm-up
            commands["single file --help"] = [PYTHON, str(file), "--help"]
            commands["single file runs list"] = [PYTHON, str(file), "runs", "list"]
        for cmd in commands.values():  # warm-up: page cache, .pyc files
            timed(cmd, env)
        samples: dict[str, list[float]] = {name: [] for name in commands}
        names = list(commands)
        for rep in range(settings.startup_reps):
            shift = rep % len(names)  # rotate the order so no command always goes first
            for name in names[shift:] + names[:shift]:
                samples[name].append(timed(commands[name], env))
    base = median(samples["python -c pass"])
    for name in ("launchctl --help", "launchctl runs list"):
        value = median(samples[name])
        report.rows.append(
            Row(
                f"startup: `{name}`",
                secs(value),
                secs(base),
                "`python -c pass` (same python)",
                f"{value - base:+.3f} s ({value / base:.1f}x)",
                f"< {STARTUP_TARGET_S} s",
                met(value < STARTUP_TARGET_S),
            )
        )
    for name, pip_name in (
        ("single file --help", "launchctl --help"),
        ("single file runs list", "launchctl runs list"),
    ):
        if name not in samples:
            continue
        value, pip = median(samples[name]), median(samples[pip_name])
        report.rows.append(
            Row(
                f"startup: `{name}` (dist/launchctl)",
                secs(value),
                secs(pip),
                f"`{pip_name}` (pip install)",
                f"{value - pip:+.3f} s ({value / pip:.2f}x)",
                f"< {SINGLE_FILE_TARGET}x",
                met(value < SINGLE_FILE_TARGET * pip),
            )
        )
    report.raw["startup"] = {
        "reps": settings.startup_reps,
        "samples_s": samples,
        "medians_s": {k: median(v) for k, v in samples.items()},
    }
    report.notes.append(
        f"startup: median of {settings.startup_reps} repetitions, the commands interleaved"
        " (order rotated each repetition) after one warm-up; `runs list` reads a store holding"
        " 50 queued runs. The single file (dist/launchctl, scripts/dist.py) runs on the same"
        " python as the pip install's console script, after a warm-up that unpacks it."
    )
