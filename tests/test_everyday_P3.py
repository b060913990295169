"""Issue 12, items 4, 5 and 9: builds an offline user can follow.

4: a FROM that cannot reach its registry says in one line that the machine is offline and
   how to build from a local base image; following that line works.
5: a failed ``pip install`` shows pip's own error lines once, and a hint about
   ``builder.index_url``/``find_links`` when pip could not reach its index.
9: a build shows its steps as they go (step n of m, name, elapsed time) in the run's log,
   ``logs -f`` and on the agent's terminal; BuildKit's raw lines go to ``build.log``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from launchctl.images.progress import StepReader, step_name
from tests.conftest import PYTHON_IMAGE, cli, cli_json, make_script, wait_for

# A registry host that never resolves (RFC 2606 .invalid): a FROM of it fails as an offline
# machine's FROM of docker.io does, on any machine.
UNREACHABLE = "lctest.invalid/library/python:3.12"


def remove_images(docker: Any) -> None:
    for image in docker.images.list(filters={"label": "launchctl.job"}):
        if any("lcp3" in tag for tag in image.tags):
            for tag in image.tags:
                with contextlib.suppress(Exception):
                    docker.images.remove(tag, force=True)


@pytest.fixture
def job(tmp_path: Path) -> Path:
    root = tmp_path / f"lcp3{os.urandom(3).hex()}"
    make_script(root, "main.py", "print('hello from the built image')\n")
    return root


def container_queue(name: str, builder: dict[str, Any] | None = None) -> None:
    config = json.dumps({"builder": builder}) if builder else "{}"
    cli("queue", "create", name, "-r", "local-container", "--config", config, check=True)


def launch(queue: str, root: Path) -> str:
    return cli(
        "launch", "-q", queue, "-u", str(root), "-E", "python main.py", check=True
    ).stdout.strip()


def show_lines(run_id: str) -> list[str]:
    return cli("runs", "show", run_id, check=True).stdout.splitlines()


def reason_of(run_id: str) -> str:
    return next(line for line in show_lines(run_id) if line.startswith("reason:"))


# -- item 4: offline base image ---------------------------------------------------------------
def test_an_unreachable_base_image_says_offline_and_following_the_line_builds(
    docker: Any, job: Path
) -> None:
    container_queue("airgap", {"base_image": UNREACHABLE})
    try:
        first = launch("airgap", job)
        agent = cli("agent", "-q", "airgap", "--burst", check=True, timeout=120)
        run = cli_json("runs", "show", first)
        assert (run["state"], run["stage"]) == ("failed", "build")
        reason = reason_of(first)
        assert "\\x0a" not in reason  # one line, not BuildKit's log
        assert "cannot reach the registry lctest.invalid (offline?)" in reason
        assert "set builder.base_image in the queue's config" in reason
        assert "scripts/services.sh images makes launchctl-test/python:bookworm" in reason.replace(
            "`", ""
        )
        assert "no such host" in reason  # the cause, last
        assert "cannot reach the registry lctest.invalid" in agent.stderr

        # Follow the line as an air-gapped user: point builder.base_image at a local image.
        edit = json.dumps({"builder": {"base_image": PYTHON_IMAGE}})
        cli("queue", "edit", "airgap", "--config", edit, check=True)
        second = launch("airgap", job)
        cli("agent", "-q", "airgap", "--burst", check=True, timeout=180)
        assert cli_json("runs", "show", second)["state"] == "finished"
        assert "hello from the built image" in cli("logs", second, check=True).stdout
    finally:
        remove_images(docker)


def _docker_hub_resolves() -> bool:
    try:
        socket.getaddrinfo("registry-1.docker.io", 443)
    except OSError:
        return False
    return True


@pytest.mark.skipif(_docker_hub_resolves(), reason="this machine reaches Docker Hub")
def test_the_default_base_image_offline_says_so_in_one_line(docker: Any, job: Path) -> None:
    """The issue's case: no builder.base_image on an offline machine (python:3.11-slim)."""
    with contextlib.suppress(Exception):
        docker.images.get("python:3.11-slim")
        pytest.skip("python:3.11-slim is on this engine: the default base builds offline")
    container_queue("nobase")
    run_id = launch("nobase", job)
    cli("agent", "-q", "nobase", "--burst", check=True, timeout=120)
    reason = reason_of(run_id)
    assert "cannot reach the registry registry-1.docker.io (offline?)" in reason
    assert "(python:3.11-slim)" in reason and "builder.base_image" in reason


# -- item 5: pip errors -------------------------------------------------------------------------
def test_a_failed_pip_install_shows_pips_error_lines_once_and_the_index_hint(
    docker: Any, job: Path
) -> None:
    make_script(job, "requirements.txt", "lctest-no-such-package-p3==1.0\n")
    container_queue("pip", {"base_image": PYTHON_IMAGE})
    run_id = launch("pip", job)
    cli("agent", "-q", "pip", "--burst", check=True, timeout=180)
    run = cli_json("runs", "show", run_id)
    assert (run["state"], run["stage"]) == ("failed", "build")
    reason = run["reason"]
    assert "\n" not in reason
    assert "at build step 5/7 (RUN pip install -r /launchctl/requirements.txt)" in reason
    assert "pip said: ERROR: " in reason
    assert reason.count("No matching distribution found for lctest-no-such-package-p3") == 1
    assert "Retrying" not in reason and "#8" not in reason and "sha256" not in reason
    # No index reachable from the build (its network is the default bridge, offline here):
    assert "pip could not reach its package index" in reason
    assert "builder.index_url" in reason and "builder.find_links" in reason
    text = cli("runs", "show", run_id, check=True).stdout
    assert text.count("No matching distribution found") == 2  # the reason, the failed event
    assert len(text) < 3000, text  # it was 9 kB of BuildKit log before


def test_a_pip_failure_with_a_reachable_index_gets_no_index_hint(
    docker: Any, job: Path, tmp_path: Path
) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_script(job, "requirements.txt", "lctest-no-such-package-p3==1.0\n")
    make_script(
        job,
        "Dockerfile",
        f"FROM {PYTHON_IMAGE}\nRUN mkdir /w && python3 -m venv /v"
        " && /v/bin/pip install --no-index --find-links /w lctest-no-such-package-p3==1.0\n",
    )
    container_queue("pip2", {"base_image": PYTHON_IMAGE})
    run_id = launch("pip2", job)
    cli("agent", "-q", "pip2", "--burst", check=True, timeout=180)
    reason = cli_json("runs", "show", run_id)["reason"]
    assert "at build step 2/2 (RUN mkdir /w && python3 -m venv /v && /v/bin/pip install" in reason
    assert "pip said: ERROR: " in reason and "lctest-no-such-package-p3" in reason
    assert "could not reach its package index" not in reason


# -- item 9: build progress ---------------------------------------------------------------------
def test_build_steps_show_as_they_go_in_logs_f_and_on_the_agent_terminal(
    docker: Any, job: Path, start_agent: Any
) -> None:
    marker = os.urandom(4).hex()
    make_script(
        job,
        "Dockerfile",
        f"FROM {PYTHON_IMAGE}\nRUN echo lcp3-{marker} && sleep 4\nCOPY main.py /main.py\n"
        'ENTRYPOINT ["python", "/main.py"]\n',
    )
    container_queue("steps")
    try:
        run_id = launch("steps", job)
        follower = subprocess.Popen(
            [sys.executable, "-m", "launchctl", "logs", "-f", run_id],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        agent_log = job.parent / "agent.log"
        agent = start_agent("-q", "steps", "-l", str(agent_log))
        assert follower.stdout is not None
        seen: list[tuple[float, str]] = []
        for line in follower.stdout:
            seen.append((time.monotonic(), line.rstrip("\n")))
            if "hello from the built image" in line:
                break
        follower.wait(timeout=60)
        lines = [text for _, text in seen]
        step2 = next(i for i, t in enumerate(lines) if "build step 2/3: RUN echo lcp3-" in t)
        done2 = next(i for i, t in enumerate(lines) if "build step 2/3 done in" in t)
        # "as it goes": the step was shown while it ran (sleep 4), before it was done.
        assert seen[done2][0] - seen[step2][0] > 2.5, lines
        assert any(t.startswith("launchctl: build step 1/3: FROM") for t in lines)
        assert any("launchctl: built launchctl/" in t and "(3 steps" in t for t in lines)
        # BuildKit's raw lines are in build.log, not in the run's own output.
        assert not any(t.startswith("#") or "sha256:" in t for t in lines), lines
        assert not any(t == f"lcp3-{marker}" or t.endswith(f" lcp3-{marker}") for t in lines)
        build_log = Path(cli_json("runs", "show", run_id)["log_path"]).with_name("build.log")
        assert f"lcp3-{marker}" in build_log.read_text()
        assert any(f"BuildKit's own output: {build_log}" in t for t in lines)
        wait_for(lambda: f"run {run_id}: build step 2/3 done in" in agent.output(), 30)
        assert f"run {run_id}: build step 3/3: COPY main.py /main.py" in agent.output()
        # ... and in the agent's own log file (-l), as every other line the agent says.
        assert f"run {run_id}: build step 2/3 done in" in agent_log.read_text()
    finally:
        remove_images(docker)


# -- the reader, on BuildKit's output as two docker versions print it ---------------------------
NO_HOST = (
    'failed to do request: Head "https://registry-1.docker.io/v2/library/python/manifests/'
    '3.11-slim": dial tcp: lookup registry-1.docker.io on 10.0.0.53:53: no such host'
)
DOCKER_20 = "\n".join(
    [
        "#3 [internal] load metadata for docker.io/library/python:3.11-slim",
        "#3 sha256:99",
        f"#3 ERROR: {NO_HOST}",
        "------",
        " > [internal] load metadata for docker.io/library/python:3.11-slim:",
        "------",
        f"failed to solve with frontend dockerfile.v0: failed to create LLB definition: {NO_HOST}",
        "",
    ]
).encode()
FAILED = 'process "/bin/sh -c pip install -r r.txt" did not complete successfully: exit code: 1'
BUILDX = "\n".join(
    [
        "#5 [2/3] RUN --mount=type=cache,target=/root/.cache/pip     pip install -r r.txt",
        "#5 0.529 WARNING: Retrying (Retry(total=4)) after connection broken by"
        " 'NewConnectionError(...Temporary failure in name resolution)': /simple/x/",
        "#5 8.155 ERROR: Could not find a version that satisfies the requirement x==1"
        " (from versions: none)",
        "#5 8.160 ERROR: No matching distribution found for x==1",
        f"#5 ERROR: {FAILED}",
        "------",
        " > [2/3] RUN pip install -r r.txt:",
        "8.160 ERROR: No matching distribution found for x==1",
        "------",
        f"ERROR: failed to solve: {FAILED}",
        "",
    ]
).encode()


def test_the_reader_finds_the_offline_from_and_the_pip_errors_in_both_formats() -> None:
    said: list[str] = []
    offline = StepReader(said.append)
    offline.feed(DOCKER_20)
    why = offline.failure(["python:3.11-slim"])
    assert why.offline and "cannot reach the registry registry-1.docker.io" in why.hint
    assert "(python:3.11-slim)" in why.hint and why.error.startswith("dial tcp: lookup")

    pip = StepReader(said.append)
    pip.feed(BUILDX)
    why = pip.failure()
    assert why.where == " at build step 2/3 (RUN pip install -r r.txt)"
    assert why.error == (
        "exit code: 1; pip said: ERROR: Could not find a version that satisfies the requirement"
        " x==1 (from versions: none) | ERROR: No matching distribution found for x==1"
    )
    assert "could not reach its package index" in why.hint
    assert said[0].startswith("launchctl: build step 2/3: RUN pip install -r r.txt [")


def test_step_names_drop_mount_options_and_are_cut() -> None:
    assert step_name("RUN --mount=type=cache,target=/x   pip  install a") == "RUN pip install a"
    assert len(step_name("RUN " + "x" * 200)) == 90
