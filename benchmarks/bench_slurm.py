"""Benchmark 7, Slurm submit-to-running latency (issue 14): a run queued on a ``slurm``
queue, through an idle agent, -> the batch job's first act, against a raw
``sbatch --wrap`` of the same command, interleaved in the same run, on the one-node
cluster that ``scripts/services.sh slurm`` starts. Skipped, saying why, without one."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from harness import (
    LAUNCHCTL,
    Settings,
    background,
    create_job,
    fresh_home,
    make_code_dir,
    median,
    read_stamp,
    wait_agent,
    wait_run_end,
)
from report import Report, Row, secs

# The job's first act is to record the wall clock, named after the run (or the raw tag).
STAMP = 'date +%s.%N > "$STAMP_DIR/$LAUNCHCTL_RUN_ID"'


def cluster_problem() -> str | None:
    """Why no Slurm cluster can be used here, or None."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "Slurm's client is not installed (scripts/services.sh slurm)"
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    if out.returncode != 0 or not {"idle", "mixed"} & set(out.stdout.split()):
        return "no idle Slurm node (scripts/services.sh slurm)"
    return None


def raw_sbatch(env: dict[str, str], stamps: Path, tag: str) -> float:
    """Seconds from just before ``sbatch --wrap`` to the job's first act."""
    job_env = dict(env, LAUNCHCTL_RUN_ID=tag)
    start = time.time()
    done = subprocess.run(
        ["sbatch", "--parsable", "--output=/dev/null", "--wrap", STAMP],
        env=job_env,
        capture_output=True,
        text=True,
        cwd=stamps,
    )
    if done.returncode != 0:
        raise RuntimeError(f"sbatch failed: {done.stderr.strip()}")
    return read_stamp(stamps / tag) - start


def launchctl_submit(env: dict[str, str], stamps: Path) -> dict[str, float]:
    """Queue one run with the CLI; time from the CLI starting (and returning) to its first act."""
    start = time.time()
    done = subprocess.run(
        [LAUNCHCTL, "launch", "-q", "hpc", "-j", "stamp"], env=env, capture_output=True, text=True
    )
    returned = time.time()
    if done.returncode != 0:
        raise RuntimeError(f"launchctl launch failed: {done.stderr.strip()}")
    run_id = done.stdout.split()[0]
    stamp = read_stamp(stamps / run_id)
    wait_run_end(env, run_id)
    return {"from_launch_s": stamp - start, "from_returned_s": stamp - returned}


def bench_slurm(settings: Settings, report: Report) -> None:
    """Slurm submit-to-running latency through launchctl against raw ``sbatch --wrap``."""
    problem = cluster_problem()
    if problem is not None:
        report.rows.append(Row(f"slurm: skipped ({problem})", *["-"] * 6))
        report.raw["slurm"] = {"skipped": problem}
        return
    with fresh_home("slurm") as (tmp, env):
        stamps = tmp / "stamps"
        stamps.mkdir()
        env["STAMP_DIR"] = str(stamps)
        create_job(env, make_code_dir(tmp), "stamp", ["sh", "-c", STAMP])
        config = json.dumps({"resource_args": {"slurm": {"time": "5"}}})
        subprocess.run(
            [LAUNCHCTL, "queue", "create", "hpc", "-r", "slurm", "--config", config],
            env=env,
            check=True,
            capture_output=True,
        )
        raw: list[float] = []
        runs: list[dict[str, float]] = []
        with background([LAUNCHCTL, "agent", "-q", "hpc"], env, tmp / "agent.log"):
            wait_agent(env, "hpc")
            launchctl_submit(env, stamps)  # warm-up, not counted
            for rep in range(settings.container_reps):
                time.sleep(0.3)
                raw.append(raw_sbatch(env, stamps, f"raw-{rep}"))
                time.sleep(0.3)
                runs.append(launchctl_submit(env, stamps))
    add_rows(report, raw, runs)


def add_rows(report: Report, raw: list[float], runs: list[dict[str, float]]) -> None:
    lat = median([r["from_launch_s"] for r in runs])
    after = median([r["from_returned_s"] for r in runs])
    base = median(raw)
    report.rows += [
        Row(
            "slurm: `launch -q` called -> batch job's first act",
            secs(lat),
            secs(base),
            "raw `sbatch --wrap` of the same command",
            f"{lat - base:+.3f} s",
            "(info)",
            "-",
        ),
        Row(
            "slurm: `launch -q` returned -> batch job's first act",
            secs(after),
            "-",
            "-",
            "-",
            "(info)",
            "-",
        ),
    ]
    raw_numbers: dict[str, Any] = {
        "reps": len(runs),
        "raw_sbatch_s": raw,
        "launchctl": runs,
        "medians_s": {"launchctl": lat, "launchctl_after_return": after, "raw_sbatch": base},
    }
    report.raw["slurm"] = raw_numbers
