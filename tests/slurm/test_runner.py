"""The slurm runner against a real one-node Slurm cluster (issue 14): submit, logs, cancel,
a failing job, a time limit, an out-of-memory kill, a requeue seen as a preemption and
resumed with the same run id, and an agent SIGKILLed while its jobs run, then restarted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from launchctl.store import Store
from tests.conftest import StartAgent, cli, cli_json, make_script, wait_for
from tests.slurm.conftest import jobs_of


def _queue(shared: Path, **options: Any) -> str:
    config = {"resource_args": {"slurm": {"shared_dir": str(shared), **options}}}
    cli("queue", "create", "hpc", "-r", "slurm", "--config", json.dumps(config), check=True)
    return "hpc"


def _code(tmp_path: Path, body: str) -> Path:
    return make_script(tmp_path / "job", "main.py", body).parent


def _launch(code: Path, *extra: str) -> str:
    return cli(
        "launch", "-q", "hpc", "-u", str(code), "-E", "python3 main.py", *extra, check=True
    ).stdout.strip()


def _job_state(job: str) -> str:
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", job], capture_output=True, text=True, timeout=30
    ).stdout
    for token in out.split():
        if token.startswith("JobState="):
            return token.removeprefix("JobState=")
    return "GONE"


def _job_of(store: Store, run_id: str) -> str:
    job = (store.root / "runs" / run_id / "slurm_job").read_text().strip()
    assert job in jobs_of({run_id})  # named by its comment, launchctl:RUN
    return job


def _wait_state(store: Store, run_id: str, *states: str, timeout: float = 60) -> None:
    wait_for(lambda: store.runs.state(run_id) in states, timeout=timeout, what=f"{states}")


def test_a_code_job_runs_as_a_batch_job_from_the_shared_folder_and_its_log_follows(
    slurm: Path, store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    _queue(slurm)
    code = _code(
        tmp_path,
        "import os\n"
        "print('job', os.environ['SLURM_JOB_ID'], 'run', os.environ['WANDB_RUN_ID'])\n"
        "print('config', os.environ['WANDB_CONFIG'])\n"
        "print('cwd', os.getcwd())\n",
    )
    run_id = _launch(code, "--set", "lr=0.5")
    start_agent("-q", "hpc")
    _wait_state(store, run_id, "finished")
    job = _job_of(store, run_id)
    log = cli("logs", run_id, check=True).stdout
    assert f"job {job} run {run_id}" in log
    assert 'config {"lr": 0.5}' in log
    assert f"cwd {slurm / run_id / 'code'}" in log  # the copy the nodes see
    run = cli_json("runs", "show", run_id)
    assert run["exit_code"] == 0
    said = [e["message"] or "" for e in run["events"]]
    assert f"Slurm job {job}" in said  # the start event names the Slurm job
    assert _job_state(job) == "COMPLETED"
    wait_for(lambda: not (slurm / run_id).exists(), what="the shared copy removed at the end")


def test_max_jobs_counts_submitted_jobs_queued_or_running_on_slurm(
    slurm: Path, store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    _queue(slurm)
    code = _code(tmp_path, "import time\nprint('up', flush=True)\ntime.sleep(300)\n")
    first, second = _launch(code), _launch(code)
    start_agent("-q", "hpc", "-j", "1")
    wait_for(lambda: "up" in cli("logs", first).stdout, timeout=60, what="the first job")
    assert store.runs.state(second) == "queued" and jobs_of({second}) == []
    cli("runs", "cancel", first, check=True)
    wait_for(lambda: jobs_of({second}), timeout=60, what="the second job submitted")


def test_a_failing_job_fails_with_its_exit_code(
    slurm: Path, store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    _queue(slurm)
    run_id = _launch(_code(tmp_path, "import sys\nprint('bad')\nsys.exit(3)\n"))
    start_agent("-q", "hpc")
    _wait_state(store, run_id, "failed")
    run = cli_json("runs", "show", run_id)
    assert run["exit_code"] == 3 and run["stage"] == "run"
    assert run["reason"].startswith("exit code 3 (Slurm job")
    assert "bad" in cli("logs", run_id, check=True).stdout


def test_cancel_scancels_the_job_and_the_run_stops(
    slurm: Path, store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    _queue(slurm)
    run_id = _launch(_code(tmp_path, "import time\nprint('up', flush=True)\ntime.sleep(300)\n"))
    start_agent("-q", "hpc")
    wait_for(lambda: "up" in cli("logs", run_id).stdout, timeout=60, what="the job's output")
    job = _job_of(store, run_id)
    assert _job_state(job) == "RUNNING"
    cli("runs", "cancel", run_id, check=True)
    _wait_state(store, run_id, "stopped")
    assert cli_json("runs", "show", run_id)["reason"] == "cancelled"
    wait_for(lambda: _job_state(job) == "CANCELLED", what="the Slurm job cancelled")


def test_a_job_cancelled_on_slurm_is_stopped_not_failed(
    slurm: Path, store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    _queue(slurm)
    run_id = _launch(_code(tmp_path, "import time\nprint('up', flush=True)\ntime.sleep(300)\n"))
    start_agent("-q", "hpc")
    wait_for(lambda: "up" in cli("logs", run_id).stdout, timeout=60, what="the job's output")
    job = _job_of(store, run_id)
    subprocess.run(["scancel", job], check=True, timeout=30)
    _wait_state(store, run_id, "stopped")
    assert cli_json("runs", "show", run_id)["reason"] == f"Slurm job {job} cancelled on Slurm"


def test_a_job_past_its_time_limit_fails_as_a_timeout(
    slurm: Path, store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    """Slurm's smallest limit is a minute, and slurmctld checks limits every 30 s: slow."""
    _queue(slurm, time="1")
    run_id = _launch(_code(tmp_path, "import time\ntime.sleep(600)\n"))
    start_agent("-q", "hpc")
    _wait_state(store, run_id, "failed", timeout=180)
    reason = cli_json("runs", "show", run_id)["reason"]
    assert reason.startswith("timeout: Slurm job") and "time limit (00:01:00)" in reason


def test_a_job_past_its_memory_is_killed_and_fails_as_out_of_memory(
    slurm: Path, store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    """The node enforces --mem (JobAcctGatherParams=OverMemoryKill in services.sh)."""
    _queue(slurm, mem="50M")
    body = "import time\nx = bytearray(400 * 1024 * 1024)\ntime.sleep(30)\n"
    run_id = _launch(_code(tmp_path, body))
    start_agent("-q", "hpc")
    _wait_state(store, run_id, "failed")
    reason = cli_json("runs", "show", run_id)["reason"]
    assert reason.startswith("out of memory: Slurm job"), reason


def test_a_requeued_job_is_a_preemption_and_resumes_as_the_same_run(
    slurm: Path, store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    _queue(slurm)
    marker = tmp_path / "first-attempt"
    body = (
        "import os, time\n"
        f"marker = {str(marker)!r}\n"
        "print('attempt', os.environ['WANDB_RUN_ID'], os.environ.get('WANDB_RESUME'), flush=True)\n"
        "if not os.path.exists(marker):\n"
        "    open(marker, 'w').close()\n"
        "    time.sleep(300)\n"
    )
    run_id = _launch(_code(tmp_path, body))
    start_agent("-q", "hpc")
    wait_for(marker.exists, timeout=60, what="the first attempt")
    first = _job_of(store, run_id)
    subprocess.run(["scontrol", "requeue", first], check=True, timeout=30)
    _wait_state(store, run_id, "finished", timeout=90)
    second = _job_of(store, run_id)
    assert second != first  # submitted again by launchctl; Slurm's own copy was cancelled
    assert _job_state(first) == "CANCELLED"
    run = cli_json("runs", "show", run_id)
    assert run["resume_count"] == 1
    moves = [(e["to_state"], e["message"] or e.get("reason") or "") for e in run["events"]]
    assert ("preempted", "") in [(s, "") for s, _ in moves]
    log = cli("logs", run_id, check=True).stdout
    assert f"attempt {run_id} None" in log and f"attempt {run_id} allow" in log


def test_a_restarted_agent_adopts_jobs_its_killed_predecessor_left_running(
    slurm: Path, store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    _queue(slurm)
    go = tmp_path / "go"
    body = (
        "import os, time\n"
        "print('started', flush=True)\n"
        f"while not os.path.exists({str(go)!r}):\n"
        "    time.sleep(0.2)\n"
        "print('done', flush=True)\n"
    )
    code = _code(tmp_path, body)
    runs = [_launch(code), _launch(code)]
    first = start_agent("-q", "hpc", "-j", "2")
    for run_id in runs:
        wait_for(lambda r=run_id: "started" in cli("logs", r).stdout, timeout=60, what="start")
    jobs = [_job_of(store, r) for r in runs]
    first.signal(signal.SIGKILL)
    first.wait()
    second = start_agent("-q", "hpc", "-j", "2")
    wait_for(lambda: second.output().count("took over run") == 2, what="the takeovers")
    go.touch()
    for run_id in runs:
        _wait_state(store, run_id, "finished")
        assert "done" in cli("logs", run_id, check=True).stdout
    assert [_job_state(j) for j in jobs] == ["COMPLETED", "COMPLETED"]


def test_an_image_job_runs_through_docker_on_the_node(
    slurm: Path, store: Store, docker: Any, start_agent: StartAgent
) -> None:
    _queue(slurm)
    run_id = cli(
        "launch",
        "-q",
        "hpc",
        "-d",
        "launchctl-test/busybox:latest",
        "-E",
        "sh -c 'echo in-container $WANDB_RUN_ID'",
        check=True,
    ).stdout.strip()
    start_agent("-q", "hpc")
    _wait_state(store, run_id, "finished")
    assert f"in-container {run_id}" in cli("logs", run_id, check=True).stdout


def test_a_runtime_missing_on_the_node_fails_the_run_in_one_line(
    slurm: Path, store: Store, start_agent: StartAgent
) -> None:
    _queue(slurm, container="apptainer")
    if subprocess.run(["sh", "-c", "command -v apptainer"], capture_output=True).returncode == 0:
        pytest.skip("apptainer is installed here")
    run_id = cli(
        "launch", "-q", "hpc", "-d", "launchctl-test/busybox:latest", "-E", "true", check=True
    ).stdout.strip()
    start_agent("-q", "hpc")
    _wait_state(store, run_id, "failed")
    reason = cli_json("runs", "show", run_id)["reason"]
    assert reason.startswith("apptainer is not installed on node ") and "\n" not in reason


def test_a_secret_reaches_the_job_and_is_masked_in_its_log(
    slurm: Path, store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    """Slurm writes the job's output to a private file; the agent copies it into the run's
    log with the secret masked, line by line, as it grows and to the end."""
    value = "s3cr3t-" + os.urandom(8).hex()
    assert cli("secret", "set", "api-key", input=value).returncode == 0
    env = {"API_KEY": {"secret": "api-key"}}
    _queue(slurm, env=env)
    seen = tmp_path / "seen"
    body = (
        "import os, time\n"
        "key = os.environ['API_KEY']\n"
        f"open({str(seen)!r}, 'w').write(key)\n"
        "print('key:', key, flush=True)\n"
        "time.sleep(1)\n"
        "print('again', key, 'last line')\n"
    )
    run_id = _launch(_code(tmp_path, body))
    start_agent("-q", "hpc")
    _wait_state(store, run_id, "finished")
    assert seen.read_text() == value  # the job got the real value
    log = cli("logs", run_id, check=True).stdout
    assert "key: ***\n" in log and log.endswith("again *** last line\n")
    assert value not in log
    folder = store.root / "runs" / run_id
    wait_for(lambda: not (folder / "slurm.out").exists(), what="the unmasked output removed")
    assert not any(value.encode() in p.read_bytes() for p in folder.iterdir() if p.is_file())


def test_a_job_that_ended_while_no_agent_watched_gets_its_real_exit_code(
    slurm: Path, store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    _queue(slurm)
    go = tmp_path / "go"
    body = (
        "import os, sys, time\n"
        "print('started', flush=True)\n"
        f"while not os.path.exists({str(go)!r}):\n"
        "    time.sleep(0.2)\n"
        "sys.exit(4)\n"
    )
    run_id = _launch(_code(tmp_path, body))
    first = start_agent("-q", "hpc")
    wait_for(lambda: "started" in cli("logs", run_id).stdout, timeout=60, what="start")
    job = _job_of(store, run_id)
    first.signal(signal.SIGKILL)
    first.wait()
    go.touch()
    wait_for(lambda: _job_state(job) == "FAILED", what="the job to end unwatched")
    start_agent("-q", "hpc")
    _wait_state(store, run_id, "failed")
    run = cli_json("runs", "show", run_id)
    assert run["exit_code"] == 4 and run["reason"].startswith("exit code 4 (Slurm job")


def test_cancelling_an_image_job_stops_its_container(
    slurm: Path, store: Store, docker: Any, start_agent: StartAgent
) -> None:
    _queue(slurm)
    run_id = cli(
        "launch",
        "-q",
        "hpc",
        "-d",
        "launchctl-test/busybox:latest",
        "-E",
        "sh -c 'echo up; sleep 300'",
        check=True,
    ).stdout.strip()
    start_agent("-q", "hpc")
    wait_for(lambda: "up" in cli("logs", run_id).stdout, timeout=60, what="the container")

    def containers() -> list[Any]:
        found = docker.containers.list(filters={"label": f"launchctl.run_id={run_id}"})
        return list(found)

    assert len(containers()) == 1
    cli("runs", "cancel", run_id, check=True)
    _wait_state(store, run_id, "stopped")
    wait_for(lambda: not containers(), what="the container stopped with the job")


def test_max_run_time_becomes_slurms_time_limit_not_a_deadline_from_submission(
    slurm: Path, store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    """max_run_time 2 s is --time=1 (Slurm counts whole minutes, from when the job runs):
    the agent does not stop the run 2 s after it was submitted."""
    _queue(slurm, max_run_time=2)
    run_id = _launch(_code(tmp_path, "import time\ntime.sleep(5)\nprint('slept')\n"))
    start_agent("-q", "hpc")
    _wait_state(store, run_id, "finished", "failed", "stopped")
    assert store.runs.state(run_id) == "finished"
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", _job_of(store, run_id)],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    assert "TimeLimit=00:01:00" in out


def test_a_job_waiting_in_slurms_queue_shows_as_queued_on_the_engine(
    slurm: Path, store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    """A job that occupies the node's every CPU keeps the run's job PENDING (Resources)."""
    blocker = subprocess.run(
        ["sbatch", "--parsable", "--exclusive", "--output=/dev/null", "--wrap", "sleep 120"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    try:
        wait_for(lambda: _job_state(blocker) == "RUNNING", timeout=60, what="the blocker")
        _queue(slurm)
        run_id = _launch(_code(tmp_path, "print('ran')\n"))
        start_agent("-q", "hpc")

        def said() -> list[str]:
            return [e["message"] or "" for e in cli_json("runs", "show", run_id)["events"]]

        wait_for(
            lambda: any(m.startswith("queued on the engine: Slurm job") for m in said()),
            timeout=60,
            what="the engine's word",
        )
        job = _job_of(store, run_id)
        assert _job_state(job) == "PENDING"
        assert f"queued on the engine: Slurm job {job} PENDING (Resources)" in said()
        assert store.runs.state(run_id) == "running"
    finally:
        subprocess.run(["scancel", blocker], capture_output=True, timeout=30)
    _wait_state(store, run_id, "finished")
    assert "ran" in cli("logs", run_id, check=True).stdout
