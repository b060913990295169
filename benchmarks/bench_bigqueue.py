"""Issue 17, a big queue: 10,000 runs queued at once (2,000 with --quick).

- launch time per run: the whole batch through the Python API (one transaction per run,
  as `launch` makes it), and `launchctl launch -q` from the CLI against the full queue,
  against the same CLI call on an empty queue (a deep queue must not slow a launch);
- the agent's memory while it drains them (``-j 2 --burst``): the peak resident set
  (``VmHWM`` in ``/proc/PID/status``, read until it exits), against the same agent's
  peak on a queue of 10 runs, so what grows with the queue shows.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench_throughput import precompile
from harness import (
    LAUNCHCTL,
    Settings,
    background,
    create_job,
    enqueue,
    fresh_home,
    make_code_dir,
    median,
    state_counts,
    timed,
)
from report import Report, Row, secs

CLI_LAUNCHES = 10  # CLI launches timed against the empty and the full queue


def peak_rss_kib(pid: int) -> int | None:
    """The process's peak resident set so far (VmHWM), in KiB; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def drain(env: dict[str, str], tmp: Path, count: int) -> dict[str, Any]:
    """An agent (-j 2 --burst) drains the queue; its peak RSS, read every 20 ms."""
    cmd = [LAUNCHCTL, "agent", "-q", "default", "-j", "2", "--burst"]
    peak = 0
    start = time.perf_counter()
    log = tmp / f"agent-{count}.log"
    with background(cmd, env, log) as proc:
        while proc.poll() is None:
            value = peak_rss_kib(proc.pid)
            if value is not None:
                peak = max(peak, value)
            time.sleep(0.02)
        drain_s = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"agent exited {proc.returncode}: {log.read_text()[-2000:]}")
    counts = state_counts(env)
    if counts.get("finished") != count:
        raise RuntimeError(f"expected {count} finished runs, got {counts}")
    return {"drain_s": drain_s, "peak_rss_kib": peak}


def cli_launches(env: dict[str, str]) -> list[float]:
    """Wall seconds of ``launchctl launch -j trivial -q default``, one by one."""
    return [
        timed([LAUNCHCTL, "launch", "-j", "trivial", "-q", "default"], env)
        for _ in range(CLI_LAUNCHES)
    ]


def bench_bigqueue(settings: Settings, report: Report) -> None:
    """10,000 runs queued at once, then drained by one agent."""
    count = 20 * settings.throughput_runs  # 10,000; 2,000 with --quick
    precompile()
    with fresh_home("bigqueue-small") as (tmp, env):
        create_job(env, make_code_dir(tmp), "trivial", ["true"])
        timed([LAUNCHCTL, "runs", "list"], env)  # warm-up: page cache, .pyc files
        empty_cli = cli_launches(env)
        small = drain(env, tmp, CLI_LAUNCHES)
    with fresh_home("bigqueue") as (tmp, env):
        create_job(env, make_code_dir(tmp), "trivial", ["true"])
        api_s = enqueue(env, "trivial", count)
        full_cli = cli_launches(env)
        big = drain(env, tmp, count + CLI_LAUNCHES)
    per_run = api_s / count
    empty_med, full_med = median(empty_cli), median(full_cli)
    report.rows += [
        Row(
            f"big queue: launch per run, {count} queued at once (Python API)",
            f"{per_run * 1000:.2f} ms",
            "-",
            "-",
            f"{count} runs in {api_s:.1f} s",
            "(report)",
            "-",
        ),
        Row(
            f"big queue: `launchctl launch -q` with {count} runs waiting",
            secs(full_med),
            secs(empty_med),
            "the same on an empty queue",
            f"{full_med / empty_med:.2f}x",
            "(report)",
            "-",
        ),
        Row(
            f"big queue: agent peak RSS draining {count + CLI_LAUNCHES} runs (-j 2)",
            f"{big['peak_rss_kib'] / 1024:.1f} MiB",
            f"{small['peak_rss_kib'] / 1024:.1f} MiB",
            f"the same agent draining {CLI_LAUNCHES} runs",
            f"{(big['peak_rss_kib'] - small['peak_rss_kib']) / 1024:+.1f} MiB",
            "(report)",
            "-",
        ),
        Row(
            f"big queue: drain rate, {count + CLI_LAUNCHES} runs (agent start to exit)",
            f"{(count + CLI_LAUNCHES) / big['drain_s']:.0f} runs/s",
            "-",
            "-",
            secs(big["drain_s"]),
            "(info)",
            "-",
        ),
    ]
    report.raw["bigqueue"] = {
        "runs": count,
        "api_enqueue_s": api_s,
        "cli_launch_empty_s": empty_cli,
        "cli_launch_full_s": full_cli,
        "drain": big,
        "drain_small": small,
    }
    report.notes.append(
        f"big queue: {count} runs queued through `launchctl.launch.submit` (one transaction"
        f" each, as `launch` does) before any agent runs; then {CLI_LAUNCHES} CLI launches"
        " each against that queue and against an empty one (medians); the agent's peak RSS"
        " is VmHWM from /proc/PID/status, read every 20 ms until it exits."
    )
