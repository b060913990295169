"""Benchmark 6, sync: ``launchctl sync`` of N finished runs against W&B's own
``wandb sync`` of N offline runs, each into a fresh stand-in W&B server, in the same run.

Both sides upload N runs that a machine made while offline, through the same stand-in
server (``tests/sync/standin``, a stand-in: not W&B's own server) on loopback:

- launchctl: N runs of a job that prints three lines, finished through one agent (not
  timed), then one ``launchctl sync`` (timed): per run an UpsertBucket, the
  ``wandb-metadata.json`` upload, the log and summary through ``file_stream``, and
  ``complete``;
- W&B: N runs of ``wandb.init(mode="offline")`` that log one metric and print three
  lines, made in one process (not timed), then one ``wandb sync DIR...`` (timed).

The W&B runs carry a history row the launchctl runs do not; the launchctl runs carry
their whole output log. The row is the time per run; the table's notes say how many
runs each server holds at the end (both must hold N) and what a second sync costs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import (
    LAUNCHCTL,
    PYTHON,
    ROOT,
    Settings,
    background,
    create_job,
    enqueue,
    fresh_home,
    make_code_dir,
    state_counts,
)
from report import Report, Row, secs

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# W&B's client aimed at the stand-in and nothing else (as tests/sync/conftest.py does).
WANDB_QUIET = {
    "WANDB_SILENT": "true",
    "WANDB_DISABLE_CODE": "true",
    "WANDB_DISABLE_GIT": "true",
    "WANDB_X_DISABLE_STATS": "true",
    "WANDB_X_DISABLE_MACHINE_INFO": "true",
    "WANDB_ERROR_REPORTING": "false",
}

# N offline runs in one process: the W&B side's set-up, not timed.
MAKE_OFFLINE_RUNS = """
import sys, wandb
for i in range(int(sys.argv[1])):
    run = wandb.init(mode="offline", entity="bench", project="sync", id=f"wb{i:06d}",
                     config={"i": i})
    for line in ("step 1", "step 2", "done"):
        print(line)
    run.log({"loss": 1.0 / (i + 1)})
    run.finish()
"""


def standin() -> Any:
    """A fresh stand-in W&B server (started)."""
    from tests.sync.standin import WandbStandIn

    return WandbStandIn().start()


def finished_runs(server: Any) -> int:
    """How many runs the stand-in holds in state finished."""
    return sum(1 for run in server.runs if run.state == "finished")


def timed_sync(env: dict[str, str], what: str) -> float:
    """Seconds one ``launchctl sync`` into the benchmark's entity and project takes."""
    start = time.perf_counter()
    done = subprocess.run(
        [LAUNCHCTL, "sync", "--entity", "bench", "--project", "sync"],
        env=env,
        capture_output=True,
        text=True,
    )
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{what} exited {done.returncode}: {done.stderr}")
    return took


def launchctl_sync(count: int) -> dict[str, Any]:
    """``count`` finished runs, then one timed ``launchctl sync`` into a fresh stand-in."""
    with fresh_home("sync") as (tmp, env):
        create_job(
            env,
            make_code_dir(tmp),
            "three-lines",
            ["sh", "-c", "echo step 1; echo step 2; echo done"],
        )
        enqueue(env, "three-lines", count)
        with background(
            [LAUNCHCTL, "agent", "-q", "default", "-j", "2", "--burst"], env, tmp / "agent.log"
        ) as proc:
            proc.wait(timeout=max(300.0, count * 0.5))
        counts = state_counts(env)
        if counts.get("finished") != count:
            raise RuntimeError(f"expected {count} finished runs, got {counts}")
        server = standin()
        try:
            sync_env = {**env, **server.env()}
            sync_s = timed_sync(sync_env, "launchctl sync")
            requests = len(server.requests)
            again_s = timed_sync(sync_env, "second launchctl sync")
            held = finished_runs(server)
            again_requests = len(server.requests) - requests
        finally:
            server.stop()
    return {
        "sync_s": sync_s,
        "per_run_s": sync_s / count,
        "requests": requests,
        "server_finished": held,
        "second_sync_s": again_s,
        "second_sync_requests": again_requests,
    }


def wandb_sync(count: int) -> dict[str, Any]:
    """``count`` offline W&B runs made in one process, then one timed ``wandb sync``."""
    wandb_exe = Path(PYTHON).parent / "wandb"
    with tempfile.TemporaryDirectory(
        prefix="launchctl-bench-wandb-", ignore_cleanup_errors=True
    ) as name:
        tmp = Path(name)
        env = {
            **os.environ,
            **WANDB_QUIET,
            "WANDB_DIR": str(tmp),
            "WANDB_CONFIG_DIR": str(tmp / ".config"),
            "WANDB_CACHE_DIR": str(tmp / ".cache"),
            "WANDB_DATA_DIR": str(tmp / ".data"),
        }
        made = subprocess.run(
            [PYTHON, "-c", MAKE_OFFLINE_RUNS, str(count)],
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
        )
        if made.returncode != 0:
            raise RuntimeError(f"making offline runs failed: {made.stderr[-2000:]}")
        folders = sorted(str(p) for p in (tmp / "wandb").glob("offline-run-*"))
        if len(folders) != count:
            raise RuntimeError(f"expected {count} offline runs, found {len(folders)}")
        server = standin()
        try:
            start = time.perf_counter()
            done = subprocess.run(
                [str(wandb_exe), "sync", *folders],
                env={**env, **server.env()},
                cwd=tmp,
                capture_output=True,
                text=True,
            )
            sync_s = time.perf_counter() - start
            if done.returncode != 0:
                raise RuntimeError(f"wandb sync exited {done.returncode}: {done.stderr[-2000:]}")
            held = finished_runs(server)
            requests = len(server.requests)
        finally:
            server.stop()
    return {
        "sync_s": sync_s,
        "per_run_s": sync_s / count,
        "requests": requests,
        "server_finished": held,
    }


def bench_sync(settings: Settings, report: Report) -> None:
    """The sync row: time per run, launchctl against W&B's own client, N runs each."""
    count = settings.sync_runs
    try:
        import wandb  # noqa: F401
    except ImportError:
        report.rows.append(Row("sync: skipped (the wandb package is not installed)", *["-"] * 6))
        report.raw["sync"] = {"skipped": "wandb not installed"}
        return
    ours = launchctl_sync(count)
    theirs = wandb_sync(count)
    ratio = theirs["per_run_s"] / ours["per_run_s"] if ours["per_run_s"] else float("nan")
    report.rows.append(
        Row(
            f"sync {count} finished runs to a W&B server (per run)",
            secs(ours["per_run_s"]),
            secs(theirs["per_run_s"]),
            "`wandb sync` of as many offline runs",
            f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower",
            "-",
            "-",
        )
    )
    report.notes.append(
        f"sync: launchctl sent {count} runs in {ours['sync_s']:.1f} s"
        f" ({ours['requests']} requests);"
        f" a second sync took {ours['second_sync_s']:.2f} s and sent"
        f" {ours['second_sync_requests']} requests; `wandb sync` took {theirs['sync_s']:.1f} s"
        f" ({theirs['requests']} requests). Finished runs on the stand-in at the end:"
        f" {ours['server_finished']} and {theirs['server_finished']}. The server is a stand-in"
        " (tests/sync/standin) on loopback, the same for both."
    )
    report.raw["sync"] = {"runs": count, "launchctl": ours, "wandb": theirs}
