"""Under CI a missing service fails the tests that need it; on a laptop they skip, saying why.

Each case runs pytest on one real test of the suite, in a subprocess, with the Docker
engine made unreachable (DOCKER_HOST at a socket nobody listens on).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NEEDS_DOCKER = (
    "tests/test_container_runner.py::test_image_runs_as_it_is_with_the_launch_environment"
)
NEEDS_A_CLUSTER = "tests/k8s/test_cluster.py::test_a_job_runs_logs_and_is_deleted_on_a_real_cluster"


def pytest_on(node: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CI", "LAUNCHCTL_REQUIRE_SERVICES", "KUBECONFIG", "PYTEST_ADDOPTS")
    }
    dead = f"unix://{tmp_path}/nobody.sock"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", node],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**clean, "DOCKER_HOST": dead, **env},
    )


def test_without_ci_a_missing_engine_skips_saying_why(tmp_path: Path) -> None:
    done = pytest_on(NEEDS_DOCKER, tmp_path)
    assert done.returncode == 0, done.stdout
    assert "1 skipped" in done.stdout
    assert "no Docker engine reachable" in done.stdout
    assert "run scripts/services.sh all" in done.stdout


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"CI": "true"}, "(CI=true)"),
        ({"LAUNCHCTL_REQUIRE_SERVICES": "1"}, "(LAUNCHCTL_REQUIRE_SERVICES=1)"),
    ],
)
def test_under_ci_a_missing_engine_fails_naming_it(
    tmp_path: Path, env: dict[str, str], said: str
) -> None:
    done = pytest_on(NEEDS_DOCKER, tmp_path, **env)
    assert done.returncode == 1, done.stdout
    assert "skipped" not in done.stdout
    assert f"a required service is missing {said}: no Docker engine reachable" in done.stdout


def test_under_ci_a_skip_that_is_not_a_service_stays_a_skip(tmp_path: Path) -> None:
    done = pytest_on(NEEDS_A_CLUSTER, tmp_path, CI="true")
    assert done.returncode == 0, done.stdout
    assert "1 skipped" in done.stdout
    assert "no real cluster" in done.stdout
