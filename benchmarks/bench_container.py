"""Benchmark 4, container latency: a run queued on a ``local-container`` queue -> its
container's first act, through an idle agent, against a raw ``docker run`` of the same
image and command."""

from __future__ import annotations

import os
import shlex
import time
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any

from containers import (
    BENCH_LABEL,
    BUSYBOX_IMAGE,
    PYTHON_IMAGE,
    STAMP_PY,
    create_queue,
    docker_cleanup,
    launchctl_container,
    raw_container,
    stamp_dir,
)
from harness import (
    LAUNCHCTL,
    Settings,
    background,
    fresh_home,
    interleaved,
    median,
    wait_agent,
)
from report import Report, Row, met, secs

CONTAINER_TARGET_RATIO = 1.2
# The container child writes the wall clock to /stamp/<run id>. busybox's `date` has no %N,
# but its adjtimex applet reads the clock to the microsecond.
BUSYBOX_STAMP = [
    "sh",
    "-c",
    "adjtimex | awk '/tv_sec/ {s = $2} /tv_usec/ {u = $2} END {printf \"%d.%06d\\n\", s, u}'"
    ' > "/stamp/$LAUNCHCTL_RUN_ID"',
]
PYTHON_STAMP = ["python3", "-c", STAMP_PY]
CHILD_WORDS = {
    BUSYBOX_IMAGE: "`sh -c` running busybox's adjtimex applet through awk, as busybox's `date`"
    " has no %N",
    PYTHON_IMAGE: "`python3 -c` writing time.time(); busybox's clock stamp did not work here",
}


def container_child(env: dict[str, str], stamps: Path) -> tuple[str, list[str]]:
    """Image and stamp command for both sides: busybox if its clock stamp works, else python."""
    with suppress(RuntimeError, ValueError, TimeoutError):
        raw_container(env, stamps, "clock-check", BUSYBOX_IMAGE, BUSYBOX_STAMP)
        if abs(float((stamps / "clock-check").read_text()) - time.time()) < 60:
            return BUSYBOX_IMAGE, BUSYBOX_STAMP
    return PYTHON_IMAGE, PYTHON_STAMP


def bench_container_latency(settings: Settings, report: Report) -> None:
    """Run queued -> container's first act through an idle agent, against raw `docker run`."""
    queue = f"bench-box-{os.getpid()}"
    labels = [f"launchctl.queue={queue}", f"{BENCH_LABEL}={os.getpid()}"]
    with fresh_home("container") as (tmp, env), docker_cleanup(labels, []):
        stamps = stamp_dir(tmp)
        image, child = container_child(env, stamps)  # also the raw side's warm-up
        create_queue(
            env, queue, {"resource_args": {"local-container": {"volume": f"{stamps}:/stamp"}}}
        )
        launch = ["-q", queue, "-d", image, "-E", shlex.join(child)]
        raw: list[float] = []
        runs: list[dict[str, Any]] = []
        with background([LAUNCHCTL, "agent", "-q", queue, "--poll", "30"], env, tmp / "agent.log"):
            wait_agent(env, queue)
            warmup = launchctl_container(env, stamps, launch)
            for rep in range(settings.container_reps):
                got = interleaved(
                    rep,
                    {
                        "raw": partial(raw_container, env, stamps, f"raw-{rep}", image, child),
                        "launchctl": partial(launchctl_container, env, stamps, launch),
                    },
                )
                raw.append(got["raw"])
                runs.append(got["launchctl"])
    add_container_rows(report, image, child, raw, runs, warmup)


def add_container_rows(
    report: Report,
    image: str,
    child: list[str],
    raw: list[float],
    runs: list[dict[str, Any]],
    warmup: dict[str, Any],
) -> None:
    """Table rows and raw numbers for the container latency benchmark."""
    base = median(raw)
    queued = median([r["queued_s"] for r in runs])
    returned = median([r["returned_s"] for r in runs])
    name = "raw `docker run --rm -v` of the same image and command"
    report.rows += [
        Row(
            "container: run queued (event) -> container's first act",
            secs(queued),
            secs(base),
            name,
            f"{queued - base:+.3f} s ({queued / base:.2f}x)",
            f"< {CONTAINER_TARGET_RATIO}x raw",
            met(queued / base < CONTAINER_TARGET_RATIO),
        ),
        Row(
            "container: `launch -q -d` returned -> container's first act",
            secs(returned),
            secs(base),
            name,
            f"{returned - base:+.3f} s ({returned / base:.2f}x)",
            "(info)",
            "-",
        ),
    ]
    keys = ("queued_to_claimed_s", "claimed_to_running_s", "running_to_first_act_s", "cli_s")
    steps = {k.removesuffix("_s"): median([r[k] for r in runs]) for k in keys}
    report.raw["container"] = {
        "reps": len(runs),
        "image": image,
        "child": child,
        "warmup": warmup,
        "raw_docker_run_s": raw,
        "launchctl": runs,
        "medians_s": {"queued": queued, "returned": returned, "raw_docker_run": base, **steps},
    }
    report.notes.append(
        f"container: median of {len(runs)} sequential runs, each waited to its end, interleaved"
        " (order alternating) with the baseline, after one warm-up of each; the agent"
        " (`launchctl agent -q QUEUE --poll 30`, a local-container queue whose resource_args"
        " bind-mount a host folder at /stamp) was idle between runs. Both sides run"
        f" `{image}` with the same command, whose first act writes the wall clock into"
        f" /stamp/$LAUNCHCTL_RUN_ID ({CHILD_WORDS[image]}; exact argv in bench.json)."
        " launchctl: from the run's `queued` event (its commit, inside `launchctl launch -q"
        " QUEUE -d IMAGE -E CMD`) to that stamp; the second row from the CLI's exit, which"
        " comes after the commit. Raw: from just before `/usr/bin/docker run --rm -v"
        " HOST:/stamp IMAGE CMD` is spawned (client start, create, attach, start) to the stamp."
        f" Medians of the agent's steps: queued -> claimed {steps['queued_to_claimed']:.3f} s,"
        " claimed -> running (new docker-py client, image lookup, create, start)"
        f" {steps['claimed_to_running']:.3f} s; the `running` event is written after the"
        " engine's start call returns, by when the container has already acted"
        f" ({steps['running_to_first_act']:+.3f} s). The warm-up run, the agent's first"
        f" container, took {warmup['queued_s']:.3f} s from queued to first act."
    )
