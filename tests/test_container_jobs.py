"""Code jobs in containers, end to end through the agent: build, cache hit, registry, macros."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from launchctl.store import Store
from tests.conftest import PYTHON_IMAGE, cli, cli_json, make_script
from tests.pkgindex import PACKAGE, PACKAGE_VALUE, Index

REGISTRY = "localhost:5000"


@pytest.fixture
def code(tmp_path: Path) -> Path:
    """A code job whose requirements name a wheel that only the local index has."""
    root = tmp_path / f"lcjob{os.urandom(3).hex()}"
    make_script(root, "requirements.txt", f"{PACKAGE}\n")
    make_script(
        root, "train.py",
        f"import json, os, {PACKAGE}\n"
        f"print('value:', {PACKAGE}.VALUE)\n"
        "print('config:', os.environ['WANDB_CONFIG'], 'image:', os.environ.get('MY_IMAGE'))\n",
    )  # fmt: skip
    return root


def queue(name: str, index: Index, **extra: Any) -> None:
    config = {
        # The index is on the host's loopback: the admin lets builds use the host network.
        "builder": {"base_image": PYTHON_IMAGE, "index_url": index.simple, "network": "host"},
        "resource_args": {"local-container": {"env": {"MY_IMAGE": "${image_uri}"}}},
        **extra,
    }
    cli("queue", "create", name, "-r", "local-container", "--config", json.dumps(config),
        check=True)  # fmt: skip


def remove_images(docker: Any, store: Store) -> None:
    for run in store.runs.select(limit=None):
        if run["image"] and run["image"] != PYTHON_IMAGE:
            with contextlib.suppress(Exception):  # already gone
                docker.images.remove(run["image"], force=True)


def test_code_job_is_built_with_its_requirements_and_runs_in_a_container(
    docker: Any, store: Store, index: Index, code: Path
) -> None:
    queue("build", index)
    try:
        first = cli("launch", "-q", "build", "-u", str(code), "-E", "python train.py",
                    "--set", "lr=0.5", check=True).stdout.strip()  # fmt: skip
        cli("agent", "-q", "build", "--burst", check=True)
        run = cli_json("runs", "show", first)
        assert run["state"] == "finished", run
        log = cli("logs", first, check=True).stdout
        # The run's log shows the build's steps; BuildKit's own output is in build.log.
        assert "launchctl: build step 5/7: RUN pip install" in log
        assert "Successfully installed" not in log
        build_log = Path(run["log_path"]).with_name("build.log").read_text()
        assert f"Successfully installed {PACKAGE}-1.0" in build_log
        assert f"value: {PACKAGE_VALUE}" in log
        # ${image_uri} is the image the run used.
        assert f'config: {{"lr": 0.5}} image: {run["image"]}' in log
        assert run["image"].startswith(f"launchctl/{code.name}:")
        states = [e["to_state"] for e in run["events"]]
        assert states == ["queued", "claimed", "building", "starting", "running", "finished"]
        assert any("built (generated from template" in (e["message"] or "") for e in run["events"])

        # The same code again: nothing is built.
        second = cli("launch", "-q", "build", "-u", str(code), "-E", "python train.py",
                     check=True).stdout.strip()  # fmt: skip
        cli("agent", "-q", "build", "--burst", check=True)
        again = cli_json("runs", "show", second)
        assert again["state"] == "finished" and again["image"] == run["image"]
        assert any("reused" in (e["message"] or "") for e in again["events"])
        assert "Successfully installed" not in cli("logs", second, check=True).stdout
    finally:
        remove_images(docker, store)


def test_a_build_error_fails_the_run_at_the_build_stage_with_the_log_tail(
    docker: Any, store: Store, index: Index, tmp_path: Path
) -> None:
    queue("build", index)
    make_script(
        tmp_path / "broken", "Dockerfile", f"FROM {PYTHON_IMAGE}\nRUN echo boom && exit 3\n"
    )
    make_script(tmp_path / "broken", "main.py", "")
    run_id = cli("launch", "-q", "build", "-u", str(tmp_path / "broken"), "-E", "python main.py",
                 check=True).stdout.strip()  # fmt: skip
    cli("agent", "-q", "build", "--burst", check=True)
    run = store.runs.get(run_id)
    assert (run["state"], run["stage"]) == ("failed", "build")
    assert "exit code: 3" in run["reason"] and "boom" in run["reason"]


def test_pushed_image_is_pulled_again_after_the_local_copy_is_removed(
    docker: Any, store: Store, index: Index, code: Path
) -> None:
    queue("pushed", index, registry=REGISTRY)
    try:
        first = cli("launch", "-q", "pushed", "-u", str(code), "-E", "python train.py",
                    check=True).stdout.strip()  # fmt: skip
        cli("agent", "-q", "pushed", "--burst", check=True)
        image = store.runs.get(first)["image"]
        assert image.startswith(f"{REGISTRY}/launchctl/")
        assert store.runs.state(first) == "finished"
        docker.images.remove(image, force=True)
        second = cli("launch", "-q", "pushed", "-u", str(code), "-E", "python train.py",
                     check=True).stdout.strip()  # fmt: skip
        cli("agent", "-q", "pushed", "--burst", check=True)
        assert store.runs.state(second) == "finished"
        log = cli("logs", second, check=True).stdout
        assert f"pulling {image}" in log
        assert f"value: {PACKAGE_VALUE}" in log
    finally:
        remove_images(docker, store)


def test_direct_launch_of_a_code_job_in_a_container_streams_the_build(
    docker: Any, store: Store, index: Index, code: Path, tmp_path: Path
) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"builder": {"base_image": PYTHON_IMAGE, "network": "host"}}))
    (code / "requirements.txt").write_text(f"--index-url {index.simple}\n{PACKAGE}\n")
    try:
        proc = cli("launch", "-r", "local-container", "-u", str(code), "-E", "python train.py",
                   "-c", str(spec))  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "launchctl: building" in proc.stdout
        assert "launchctl: build step 5/7: RUN pip install" in proc.stdout  # as it goes
        assert f"value: {PACKAGE_VALUE}" in proc.stdout
    finally:
        remove_images(docker, store)
