"""Code jobs on a kubernetes queue (issue 14): the agent builds the image as for a
local-container queue, pushes it to the queue's registry (127.0.0.1:5000 here), and the
Job runs that image. The STAND-IN API server's pods pull the image from the registry and
run it in the real Docker engine (tests/k8s/standin.py), so the image a cluster would get
is the one tested."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from launchctl.store import Store
from tests.conftest import PYTHON_IMAGE, cli, cli_json, make_script
from tests.k8s.standin import StandIn
from tests.pkgindex import PACKAGE, PACKAGE_VALUE, Index

REGISTRY = "localhost:5000"


@pytest.fixture
def code(tmp_path: Path) -> Path:
    root = tmp_path / f"k8sjob{os.urandom(3).hex()}"
    make_script(root, "requirements.txt", f"{PACKAGE}\n")
    make_script(
        root, "train.py",
        f"import os, {PACKAGE}\n"
        f"print('value:', {PACKAGE}.VALUE)\n"
        "print('run:', os.environ['WANDB_RUN_ID'], 'config:', os.environ['WANDB_CONFIG'])\n",
    )  # fmt: skip
    return root


def test_a_code_job_is_built_pushed_and_run_as_a_job(
    docker_standin: StandIn, docker: Any, store: Store, index: Index, code: Path
) -> None:
    try:
        import requests

        requests.get(f"http://{REGISTRY}/v2/", timeout=5)
    except Exception as exc:
        pytest.skip(f"no registry on {REGISTRY}: run scripts/services.sh all ({exc})")
    config = {
        "builder": {"base_image": PYTHON_IMAGE, "index_url": index.simple, "network": "host"},
        "registry": REGISTRY,
        "resource_args": {"kubernetes": {"metadata": {"labels": {"team": "ml"}}}},
    }
    cli("queue", "create", "k8s", "-r", "kubernetes", "-c", json.dumps(config), check=True)
    run_id = cli(
        "launch", "-q", "k8s", "-u", str(code), "-E", "python train.py", "--set", "lr=0.5",
        check=True,
    ).stdout.strip()  # fmt: skip
    try:
        cli("agent", "-q", "k8s", "--burst", check=True, timeout=600)
        run = cli_json("runs", "show", run_id)
        assert run["state"] == "finished", run
        image = run["image"]
        assert image.startswith(f"{REGISTRY}/launchctl/{code.name}:")
        [job] = docker_standin.created
        assert job["spec"]["template"]["spec"]["containers"][0]["image"] == image
        assert docker_standin.pulled == [image]  # the pod's image came from the registry
        log = cli("logs", run_id, check=True).stdout
        assert f"value: {PACKAGE_VALUE}" in log
        assert f'run: {run_id} config: {{"lr": 0.5}}' in log
    finally:
        for run in store.runs.select(limit=None):
            if run["image"]:
                with contextlib.suppress(Exception):
                    docker.images.remove(run["image"], force=True)
