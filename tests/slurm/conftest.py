"""Fixtures for the slurm runner's tests: a real one-node Slurm cluster on this machine
(``scripts/services.sh slurm`` starts it; scripts/test.sh does so before the suite). The
tests skip, saying why, when no cluster answers."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _cluster_problem() -> str | None:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "Slurm's client (sbatch, sinfo) is not installed; run scripts/services.sh slurm"
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10
        )
    except subprocess.TimeoutExpired:
        return "sinfo does not answer; run scripts/services.sh slurm"
    states = out.stdout.split()
    if out.returncode != 0 or not {"idle", "mixed", "allocated"} & set(states):
        why = (out.stderr.strip().splitlines() or [" ".join(states) or "no node"])[0]
        return f"no Slurm cluster is up ({why}); run scripts/services.sh slurm"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    problem = _cluster_problem()
    if problem is not None:
        pytest.skip(problem)


def jobs_of(run_ids: set[str]) -> list[str]:
    """The Slurm jobs (any state slurmctld remembers) of these launchctl runs."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-o", "%i|%k"], capture_output=True, text=True, timeout=30
    ).stdout
    found = []
    for line in out.splitlines():
        job, _, comment = line.partition("|")
        if comment.strip().removeprefix("launchctl:") in run_ids:
            found.append(job.strip())
    return found


@pytest.fixture
def slurm(slurm_cluster: None, home: Path, tmp_path: Path) -> Iterator[Path]:
    """The cluster, and a shared folder for code jobs (this machine is the only node);
    this test's jobs still queued or running are cancelled after it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    yield shared
    runs = home / "runs"  # one folder per run that got one: read without the store
    mine = {p.name for p in runs.iterdir()} if runs.is_dir() else set()
    jobs = jobs_of(mine)
    if jobs:
        subprocess.run(["scancel", *jobs], capture_output=True, timeout=30)
