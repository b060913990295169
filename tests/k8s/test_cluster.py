"""The kubernetes runner against a REAL cluster (issue 14): marked ``cluster``, run only when
``KUBECONFIG`` names a kubeconfig file (none can run on the machines this suite is built on).

    KUBECONFIG=~/.kube/config pytest -m cluster tests/k8s/test_cluster.py

The agent and the cluster must agree on the image: busybox from Docker Hub, or set
``LAUNCHCTL_K8S_TEST_IMAGE`` to one the cluster can pull. Jobs go to the kubeconfig
context's namespace (``default`` if it names none); the ServiceAccount or user needs what
``launchctl k8s rbac`` prints.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from launchctl.store import Store
from tests.conftest import StartAgent, cli, cli_json, wait_for

KUBECONFIG = os.environ.get("KUBECONFIG", "")
IMAGE = os.environ.get("LAUNCHCTL_K8S_TEST_IMAGE", "busybox:1.36")

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        not KUBECONFIG or not Path(KUBECONFIG).expanduser().is_file(),
        reason="no real cluster: set KUBECONFIG to a kubeconfig file to run these",
    ),
]


@pytest.fixture(autouse=True)
def _cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("kubernetes")
    monkeypatch.setenv("KUBECONFIG", KUBECONFIG)


def test_a_job_runs_logs_and_is_deleted_on_a_real_cluster() -> None:
    cli("queue", "create", "k8s", "-r", "kubernetes", "-c", "{}", check=True)
    run_id = cli(
        "launch", "-q", "k8s", "-d", IMAGE, "-E", "sh -c 'echo hello from $WANDB_RUN_ID'",
        check=True,
    ).stdout.strip()  # fmt: skip
    cli("agent", "-q", "k8s", "--burst", check=True, timeout=600)
    shown = cli_json("runs", "show", run_id)
    assert shown["state"] == "finished", shown
    assert cli("logs", run_id, check=True).stdout == f"hello from {run_id}\n"


def test_cancel_on_a_real_cluster(store: Store, start_agent: StartAgent) -> None:
    config = {"spec": {"template": {"spec": {"terminationGracePeriodSeconds": 5}}}}
    cli("queue", "create", "k8s", "-r", "kubernetes", "-c", json.dumps(config), check=True)
    run_id = cli(
        "launch", "-q", "k8s", "-d", IMAGE, "-E", "sh -c 'echo up; sleep 600'", check=True
    ).stdout.strip()
    start_agent("-q", "k8s", "--grace", "2")
    wait_for(lambda: "up" in cli("logs", run_id).stdout, timeout=300, what="first line")
    cli("runs", "cancel", run_id, check=True)
    wait_for(lambda: store.runs.state(run_id) == "stopped", timeout=120, what="stopped")
