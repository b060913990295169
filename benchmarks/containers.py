"""What the two container benchmarks (4 and 5) share: the docker client, the engine, the
images, cleanup, a raw ``docker run`` and a launchctl container run, each timed to the
container's first act."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from harness import (
    LAUNCHCTL,
    ROOT,
    read_stamp,
    run_timeline,
    span,
    timed,
    use_home,
    wait_run_end,
    why_failed,
)

DOCKER = "/usr/bin/docker"  # Debian's docker.io client: BuildKit without buildx
BUSYBOX_IMAGE = "launchctl-test/busybox:latest"
PYTHON_IMAGE = "launchctl-test/python:bookworm"
BENCH_LABEL = "launchctl-bench"  # on the baseline's containers, so cleanup can find them
STAMP_PY = (
    "import os, time; open('/stamp/' + os.environ['LAUNCHCTL_RUN_ID'], 'w')"
    ".write(repr(time.time()) + '\\n')"
)


def docker(*args: str, check: bool = True) -> str:
    """Run the docker client with ``args``; its stdout."""
    done = subprocess.run(
        [DOCKER, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done.stdout


def docker_version() -> str | None:
    """The engine's version, or None when it does not answer."""
    try:
        return docker("version", "--format", "{{.Server.Version}}").strip() or None
    except (OSError, RuntimeError, subprocess.TimeoutExpired):
        return None


def engine_problem() -> str | None:
    """Start the engine and base images with ``scripts/services.sh all``; why not, or None."""
    try:
        done = subprocess.run(
            ["bash", str(ROOT / "scripts" / "services.sh"), "all"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=900,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"scripts/services.sh all: {exc}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"scripts/services.sh all exited {done.returncode}: {last}"
    return None


@contextmanager
def docker_cleanup(labels: list[str], repositories: list[str]) -> Iterator[None]:
    """On the way out, force-remove containers with these labels and images of these repos."""
    try:
        yield
    finally:
        for label in labels:
            with suppress(Exception):
                ids = docker("ps", "-aq", "--filter", f"label={label}").split()
                if ids:
                    docker("rm", "-f", *ids, check=False)
        for repo in repositories:
            with suppress(Exception):
                refs = docker("images", "--format", "{{.Repository}}:{{.Tag}}", repo).split()
                if refs:
                    docker("rmi", "-f", *refs, check=False)


def stamp_dir(tmp: Path) -> Path:
    """A host folder every container (whatever its user) can write its stamp into."""
    stamps = tmp / "stamps"
    stamps.mkdir()
    stamps.chmod(0o777)
    return stamps


def raw_container(
    env: dict[str, str], stamps: Path, tag: str, image: str, child: list[str]
) -> float:
    """Seconds from just before a raw ``docker run --rm`` starts to the container's first act."""
    cmd = [DOCKER, "run", "--rm", "--label", f"{BENCH_LABEL}={os.getpid()}"]
    cmd += ["-v", f"{stamps}:/stamp", "-e", f"LAUNCHCTL_RUN_ID={tag}", image, *child]
    start = time.time()
    done = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"docker run exited {done.returncode}: {done.stderr.decode()}")
    return read_stamp(stamps / tag) - start


def create_queue(env: dict[str, str], name: str, config: dict[str, Any]) -> None:
    """Create a local-container queue with the CLI."""
    cmd = [LAUNCHCTL, "queue", "create", name, "-r", "local-container", "-c", json.dumps(config)]
    timed(cmd, env)


def launchctl_container(env: dict[str, str], stamps: Path, launch: list[str]) -> dict[str, Any]:
    """Queue one container run with the CLI; time from invocation, return and queueing to its
    container's first act, plus the agent's steps from the run's events."""
    invoked = time.time()
    done = subprocess.run([LAUNCHCTL, "launch", *launch], env=env, capture_output=True, text=True)
    returned = time.time()
    if done.returncode != 0:
        raise RuntimeError(f"launchctl launch failed: {done.stderr}")
    run_id = done.stdout.split()[0]
    stamp = read_stamp(stamps / run_id)
    wait_run_end(env, run_id)
    timeline = run_timeline(env, run_id)
    if timeline["state"] != "finished":
        raise RuntimeError(
            f"container run {run_id} ended {timeline['state']}: {why_failed(env, run_id)}"
        )
    events = timeline["events"]
    with use_home(env) as store:
        image = store.runs.get(run_id)["image"]
    return {
        "run_id": run_id,
        "image": image,
        "cli_s": returned - invoked,
        "invoked_s": stamp - invoked,
        "returned_s": stamp - returned,
        "queued_s": stamp - events.get("queued", timeline["created_at"]),
        "queued_to_claimed_s": span(events, "queued", "claimed"),
        "claimed_to_running_s": span(events, "claimed", "running"),
        "building_to_starting_s": span(events, "building", "starting"),
        "starting_to_running_s": span(events, "starting", "running"),
        "running_to_first_act_s": stamp - events.get("running", float("nan")),
    }
