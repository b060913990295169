"""The launch spec's ``builder`` for queued runs (issue 11, "Launch": the build half).

A queued run's launch spec ``builder`` and its resource args' ``builder`` choose base images
as a direct launch's spec does; what else a builder section holds (the build network, the
package indexes and their credentials, build_args, template_dir) stays the queue admin's
(issue 9's trust rules), and a queued run that sets it is told it is not used.
Sources:
  SPEC    wandb/sdk/launch/_project_spec.py, _get_accelerator_base_image: W&B reads
          builder.accelerator.base_image (or the older builder.cuda.base_image) from the
          resource args' builder section (resource_args.<resource>.builder)
  AGENT   wandb/sdk/launch/agent/agent.py: launch_spec.get("builder") is the build config
          override of a queued run (construct_agent_configs)
  DOCS    https://docs.wandb.ai/guides/launch/launch-queue-config ("builder" /
          "accelerator base image" in a queue's resource args)
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PYTHON_IMAGE, cli, cli_json, make_script

MAIN = "import sys; print('prefix', sys.prefix)\n"


def logs_and_build(run_id: str) -> str:
    """The run's log and its build.log: BuildKit's own output is there (issue 12, item 9)."""
    text = cli("logs", run_id).stdout
    build = Path(cli_json("runs", "show", run_id)["log_path"]).with_name("build.log")
    return text + (build.read_text() if build.exists() else "")


@pytest.fixture
def code(tmp_path: Path) -> Path:
    """A code job without requirements: its build needs no network."""
    return make_script(tmp_path / "job", "main.py", MAIN).parent


def _container_queue(name: str, builder: dict[str, Any] | None = None) -> None:
    config = {"builder": builder} if builder else {}
    cli("queue", "create", name, "-r", "local-container", "--config", json.dumps(config),
        check=True)  # fmt: skip


def _run(queue: str, code: Path, spec: dict[str, Any] | None, tmp_path: Path) -> dict[str, Any]:
    args = ["launch", "-q", queue, "-u", str(code), "-E", "python main.py"]
    if spec is not None:
        path = tmp_path / "spec.json"
        path.write_text(json.dumps(spec))
        args += ["-c", str(path)]
    run_id = cli(*args, check=True).stdout.strip().splitlines()[-1]
    cli("agent", "-q", queue, "--burst", timeout=300)
    return dict(cli_json("runs", "show", run_id))


def _cleanup(docker: Any, run: dict[str, Any]) -> None:
    if run.get("image") and run["image"] != PYTHON_IMAGE:
        with contextlib.suppress(Exception):
            docker.images.remove(run["image"], force=True)


ACCEL = {"accelerator": {"base_image": PYTHON_IMAGE}}
CUDA = {"cuda": {"base_image": PYTHON_IMAGE}}


@pytest.mark.parametrize(
    "spec",
    [
        # AGENT: the launch spec's top-level builder, here W&B's accelerator key
        pytest.param({"builder": ACCEL}, id="spec-builder-accelerator"),
        # SPEC: the resource args' builder section, W&B's own place for it
        pytest.param(
            {"resource_args": {"local-container": {"builder": ACCEL}}},
            id="resource-args-accelerator",
        ),
        # SPEC: the older cuda key, read when accelerator is absent
        pytest.param(
            {
                "resource_args": {
                    "local-container": {"builder": {"cuda": {"base_image": PYTHON_IMAGE}}}
                }
            },
            id="resource-args-cuda",
        ),
    ],
)
def test_queued_run_builds_on_its_accelerator_base_image(
    docker: Any, home: Path, tmp_path: Path, code: Path, spec: dict[str, Any]
) -> None:
    # The queue names no base image: without the run's, the default python:3.11-slim would
    # be pulled (offline: the build fails). With it, the accelerator path runs on the local
    # python image ("the base image has python3") and the run finishes.
    _container_queue("acc")
    run = _run("acc", code, spec, tmp_path)
    try:
        assert run["state"] == "finished", run
        log = logs_and_build(run["id"])
        assert "the base image has python3" in log
        assert "prefix /launchctl/venv" in log
    finally:
        _cleanup(docker, run)


def test_queued_run_without_base_image_does_not_get_one(
    docker: Any, home: Path, tmp_path: Path, code: Path
) -> None:
    # The contrast: the same queued run with no builder in its spec is not built on the local
    # python image (the default base, python:3.11-slim, is not here offline).
    _container_queue("plain")
    run = _run("plain", code, None, tmp_path)
    try:
        log = logs_and_build(run["id"])
        assert "the base image has python3" not in log
        assert run["state"] == "failed" or "python:3.11-slim" in log, run
    finally:
        _cleanup(docker, run)


def test_queued_run_spec_builder_base_image_is_the_default_base(
    docker: Any, home: Path, tmp_path: Path, code: Path
) -> None:
    # AGENT: the spec's builder overrides the build config; builder.base_image (launchctl's
    # key for the generated Dockerfile's FROM) is the launcher's to choose, as -d is.
    _container_queue("base")
    run = _run("base", code, {"builder": {"base_image": PYTHON_IMAGE}}, tmp_path)
    try:
        assert run["state"] == "finished", run
        assert "prefix /launchctl/venv" in logs_and_build(run["id"])
    finally:
        _cleanup(docker, run)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        # issue 9: package indexes (and their credentials) are the queue admin's
        pytest.param("index_url", "http://10.0.0.1/simple/", id="index-url"),
        # build_args reach predefined ARGs such as HTTP_PROXY: the admin's
        pytest.param("build_args", {"HTTP_PROXY": "http://10.0.0.1:3128"}, id="build-args"),
    ],
)
def test_queued_run_cannot_set_the_admins_builder_keys(
    docker: Any, home: Path, tmp_path: Path, code: Path, key: str, value: Any
) -> None:
    _container_queue("admin", {"base_image": PYTHON_IMAGE})
    run = _run("admin", code, {"builder": {key: value}}, tmp_path)
    try:
        assert run["state"] == "finished", run  # built as the admin set it
        notes = json.dumps(run)
        assert f"builder.{key} in the run's launch spec is not used" in notes, notes
        log = logs_and_build(run["id"])
        assert "10.0.0.1" not in log
    finally:
        _cleanup(docker, run)
