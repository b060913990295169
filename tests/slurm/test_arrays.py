"""Job arrays on a Slurm queue (issue 18), against the real one-node cluster: each run of
``launch --array`` is its own sbatch job, and sees Slurm's array variables
(``SLURM_ARRAY_TASK_ID`` ...) as well as launchctl's, so a script written for
``sbatch --array`` runs unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from launchctl.store import Store
from tests.conftest import StartAgent, cli, make_script, wait_for

SHOW = (
    "import os\n"
    "names = ['SLURM_ARRAY_JOB_ID', 'SLURM_ARRAY_TASK_ID', 'SLURM_ARRAY_TASK_COUNT',\n"
    "         'SLURM_ARRAY_TASK_MIN', 'SLURM_ARRAY_TASK_MAX', 'LAUNCHCTL_ARRAY_INDEX']\n"
    "print('env', ' '.join(f'{n}={os.environ.get(n)}' for n in names), flush=True)\n"
)


def test_each_run_of_an_array_on_slurm_sees_slurms_array_variables(
    slurm: Path, store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    config = {"resource_args": {"slurm": {"shared_dir": str(slurm)}}}
    cli("queue", "create", "hpc", "-r", "slurm", "--config", json.dumps(config), check=True)
    code = make_script(tmp_path / "job", "main.py", SHOW).parent
    array_id = cli(
        "launch", "-q", "hpc", "-u", str(code), "-E", "python3 main.py", "--array", "3,5%1",
        "--quiet", check=True,
    ).stdout.strip()  # fmt: skip
    runs = store.arrays.runs(array_id)
    start_agent("-q", "hpc")
    wait_for(
        lambda: {store.runs.state(r["id"]) for r in runs} == {"finished"},
        timeout=120,
        what="both runs of the array finished on Slurm",
    )
    for run, index in zip(runs, (3, 5), strict=True):
        log = cli("logs", run["id"], check=True).stdout
        assert (
            f"env SLURM_ARRAY_JOB_ID={array_id} SLURM_ARRAY_TASK_ID={index}"
            f" SLURM_ARRAY_TASK_COUNT=2 SLURM_ARRAY_TASK_MIN=3 SLURM_ARRAY_TASK_MAX=5"
            f" LAUNCHCTL_ARRAY_INDEX={index}"
        ) in log, log


def test_an_image_run_of_an_array_on_slurm_gets_them_inside_its_container(
    slurm: Path, store: Store, docker: Any, start_agent: StartAgent
) -> None:
    config = {"resource_args": {"slurm": {"shared_dir": str(slurm)}}}
    cli("queue", "create", "hpc", "-r", "slurm", "--config", json.dumps(config), check=True)
    array_id = cli(
        "launch", "-q", "hpc", "-d", "launchctl-test/busybox:latest", "-E",
        "sh -c 'echo task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_TASK_COUNT"
        " index $LAUNCHCTL_ARRAY_INDEX'", "--array", "7", "--quiet", check=True,
    ).stdout.strip()  # fmt: skip
    (run,) = store.arrays.runs(array_id)
    start_agent("-q", "hpc")
    wait_for(lambda: store.runs.state(run["id"]) == "finished", timeout=120, what="finished")
    assert "task 7 of 1 index 7" in cli("logs", run["id"], check=True).stdout
