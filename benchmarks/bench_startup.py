"""Benchmark 1, startup: ``launchctl --help`` and ``launchctl runs list`` against
``python -c pass``."""

from __future__ import annotations

from harness import (
    LAUNCHCTL,
    PYTHON,
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
    report.raw["startup"] = {
        "reps": settings.startup_reps,
        "samples_s": samples,
        "medians_s": {k: median(v) for k, v in samples.items()},
    }
    report.notes.append(
        f"startup: median of {settings.startup_reps} repetitions, the three commands interleaved"
        " (order rotated each repetition) after one warm-up; `runs list` reads a store holding"
        " 50 queued runs."
    )
