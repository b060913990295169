"""Issue 12, item 3: a run that asks for GPUs never runs without them.

On an agent that schedules no GPUs (``--gpus none``, or none found) such a run waits,
saying why in ``runs show``, and stays claimable by an agent that has them; with
``--burst`` it fails at stage agent with that reason. No GPU here: ``--gpus 0,1`` is a
configured (fake) device list.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launchctl.gpus import devices as disc
from tests.conftest import StartAgent, cli, cli_json, make_script, wait_for

GPU_QUEUE = {
    "resource_args": {"local-process": {"gpus": "{{gpus}}"}},
    "template_variables": {"gpus": {"type": "integer", "minimum": 0, "maximum": 8, "default": 0}},
}


@pytest.fixture(autouse=True)
def no_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    """No NVML or nvidia-smi: an agent without --gpus schedules none, as on this machine."""
    monkeypatch.setenv(disc.DISCOVERY_ENV, "off")


@pytest.fixture
def job(tmp_path: Path) -> Path:
    return make_script(
        tmp_path / "gpujob",
        "train.py",
        "import os\nprint('visible=' + os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>'))\n",
    ).parent


def launch(job: Path, gpus: int) -> str:
    proc = cli("launch", "-q", "gpu", "-u", str(job), "-E", "python train.py", "-v",
               f"gpus={gpus}", check=True)  # fmt: skip
    return proc.stdout.strip().split()[-1]


def state(run_id: str) -> str:
    return str(cli_json("runs", "show", run_id)["state"])


def notes(run_id: str) -> list[str]:
    return [
        e["message"]
        for e in cli_json("runs", "show", run_id)["events"]
        if e["from_state"] == e["to_state"] and (e["message"] or "").startswith("waiting:")
    ]


def test_a_burst_agent_without_gpus_fails_a_gpu_run_and_runs_the_rest(job: Path) -> None:
    cli("queue", "create", "gpu", "--config", json.dumps(GPU_QUEUE), check=True)
    gpu_run, cpu_run = launch(job, 2), launch(job, 0)
    proc = cli("agent", "-q", "gpu", "--burst", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "GPU scheduling is off (no GPU found by NVML or nvidia-smi)" in proc.stderr
    run = cli_json("runs", "show", gpu_run)
    assert (run["state"], run["stage"]) == ("failed", "agent"), run
    assert run["reason"].startswith("needs 2 GPUs, agent ") and " has none" in run["reason"]
    assert "running" not in [e["to_state"] for e in run["events"]]  # never ran without them
    assert state(cpu_run) == "finished"
    shown = cli("runs", "show", gpu_run, check=True).stdout
    assert "needs 2 GPUs" in shown and "(stage agent)" in shown


def test_a_gpu_run_waits_with_its_reason_then_runs_on_an_agent_with_gpus(
    job: Path, start_agent: StartAgent
) -> None:
    cli("queue", "create", "gpu", "--config", json.dumps(GPU_QUEUE), check=True)
    gpu_run, cpu_run = launch(job, 2), launch(job, 0)
    plain = start_agent("-q", "gpu", "--gpus", "none")
    # The CPU run behind it is not held up by the GPU run it passes over.
    wait_for(lambda: state(cpu_run) == "finished", what="the CPU run to finish")
    wait_for(lambda: notes(gpu_run), what="the waiting reason")
    assert "GPU scheduling is off (--gpus none)" in plain.output()
    run = cli_json("runs", "show", gpu_run)
    assert run["state"] == "queued" and run["agent_id"] is None  # not claimed and held
    assert run["reason"].startswith("waiting: needs 2 GPUs, agent ") and "has none" in run["reason"]
    shown = cli("runs", "show", gpu_run, check=True).stdout
    assert "reason:     waiting: needs 2 GPUs, agent " in shown and " has none" in shown
    assert "has not started: waiting: needs 2 GPUs" in cli("logs", gpu_run).stderr
    # More passes of the agent over the waiting GPU run: another CPU run, queued behind it,
    # started and finished. The reason is said once, not every pass.
    another = launch(job, 0)
    wait_for(lambda: state(another) == "finished", what="another CPU run to finish")
    assert cli_json("runs", "show", gpu_run)["state"] == "queued"
    assert len(notes(gpu_run)) == 1
    assert "visible=<unset>" in cli("logs", cpu_run, check=True).stdout
    start_agent("-q", "gpu", "--gpus", "0,1")
    wait_for(lambda: state(gpu_run) == "finished", what="the GPU run to finish")
    run = cli_json("runs", "show", gpu_run)
    assert run["devices"] == [0, 1] and run["reason"] is None  # the wait's reason is gone
    out = cli("logs", gpu_run, check=True).stdout
    assert "visible=0,1" in out


def test_an_agent_with_too_few_gpus_says_so_and_burst_fails_it(job: Path) -> None:
    cli("queue", "create", "gpu", "--config", json.dumps(GPU_QUEUE), check=True)
    big, small = launch(job, 4), launch(job, 1)
    proc = cli("agent", "-q", "gpu", "--gpus", "0,1", "--burst", timeout=60)
    assert proc.returncode == 0, proc.stderr
    run = cli_json("runs", "show", big)
    assert (run["state"], run["stage"]) == ("failed", "agent"), run
    assert "needs 4 GPUs, agent " in run["reason"] and "has 2 GPUs (0,1)" in run["reason"]
    assert state(small) == "finished"


def test_a_burst_agent_leaves_a_gpu_run_to_a_live_agent_that_may_have_gpus(
    job: Path, start_agent: StartAgent
) -> None:
    cli("queue", "create", "gpu", "--config", json.dumps(GPU_QUEUE), check=True)
    run_id = launch(job, 2)
    gpus = start_agent("-q", "gpu", "--gpus", "0")  # reports its GPU; too few for 2
    wait_for(lambda: "GPUs (configured)" in gpus.output(), what="the GPU agent's banner")
    proc = cli("agent", "-q", "gpu", "--gpus", "none", "--burst", timeout=60)
    assert proc.returncode == 0, proc.stderr  # it left; it neither failed nor held the run
    run = cli_json("runs", "show", run_id)
    assert run["state"] == "queued" and run["agent_id"] is None, run
