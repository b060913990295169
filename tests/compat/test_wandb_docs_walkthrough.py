"""W&B compat (issue 11): W&B's Launch walkthrough and set-up pages, command by command.

Each case is one documented command sequence from W&B's docs (the page is cited above it),
typed as W&B documents it with ``wandb`` replaced by ``launchctl``, and run end to end
through launchctl's CLI: queue create, agent, launch, job create. What cannot run offline is
replaced, and the case says so: the public images (``wandb/job_hello_world:main``,
``tensorflow/tensorflow:latest-gpu``) by the local test images, GitHub by a local git
repository, ``wandb login`` and ``wandb.init`` by nothing (no server; a script prints what it
sees instead). ``wandb launch-agent`` is ``launchctl agent``; a queue made in W&B's UI with
resource "Docker" is ``launchctl queue create NAME -r local-container``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import (
    BUSYBOX,
    PYTHON_IMAGE,
    StartAgent,
    cli,
    cli_json,
    git,
    make_script,
    table_counts,
    wait_for,
)

WALKTHROUGH = "https://docs.wandb.ai/platform/launch/walkthrough"
DOCKER_SETUP = "https://docs.wandb.ai/platform/launch/setup-launch-docker"
ADD_JOB = "https://docs.wandb.ai/platform/launch/add-job-to-queue"
CREATE_JOB = "https://docs.wandb.ai/platform/launch/create-launch-job"
NO_BUILD_FAQ = "https://docs.wandb.ai/platform/launch/launch-faq/build_container_launch"
TF_GPU_FAQ = "https://docs.wandb.ai/platform/launch/launch-faq/launch_tensorflow_gpu"

# What a run's script prints: the W&B variables a run sees, one JSON line.
SHOW_ENV = (
    "import json, os\n"
    "keys = ('WANDB_PROJECT', 'WANDB_ENTITY', 'WANDB_CONFIG', 'WANDB_RUN_ID', 'WANDB_NAME')\n"
    "print('ENV=' + json.dumps({k: os.environ.get(k) for k in keys}))\n"
)


def cli_in(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``launchctl ARGS`` run from ``cwd`` (the docs' ``--uri .``)."""
    return subprocess.run(
        [sys.executable, "-m", "launchctl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )


def seen_env(log: str) -> dict[str, Any]:
    line = next(x for x in log.splitlines() if x.startswith("ENV="))
    result: dict[str, Any] = json.loads(line[4:])
    return result


def printed_run(stdout: str) -> dict[str, Any]:
    """The run record a direct ``launch --json`` printed (the log and a summary line may
    come around it)."""
    start = stdout.index("{")
    result, _ = json.JSONDecoder().raw_decode(stdout[start:])
    assert isinstance(result, dict)
    return result


def finished(run_id: str) -> bool:
    return cli_json("runs", "show", run_id)["state"] in ("finished", "failed", "crashed")


# -- Create a launch job -----------------------------------------------------------------------


def test_walkthrough_with_a_docker_image(docker: Any, home: Path) -> None:
    # WALKTHROUGH, "Create a launch job / With a Docker image":
    #   wandb launch --docker-image wandb/job_hello_world:main --project launch-quickstart
    # (the local busybox image for the public one). W&B runs it now, in a container.
    proc = cli("launch", "--docker-image", BUSYBOX, "--project", "launch-quickstart",
               "--json", timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run = printed_run(proc.stdout)
    assert run["state"] == "finished", run
    assert run["resource"] == "local-container"  # an image runs in a container, as W&B's
    assert run["project"] == "launch-quickstart"


def _hello_world_repo(tmp_path: Path) -> Path:
    """A stand-in for github.com/wandb/launch-jobs: jobs/hello_world with Dockerfile.wandb."""
    repo = tmp_path / "launch-jobs"
    job = repo / "jobs" / "hello_world"
    make_script(job, "job.py", "print('hello from job.py')\n" + SHOW_ENV)
    make_script(
        job, "Dockerfile.wandb", f"FROM {PYTHON_IMAGE}\nWORKDIR /src\nCOPY job.py /src/job.py\n"
    )
    make_script(repo, "README.md", "monorepo\n")
    git("init", "-q", "-b", "main", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "hello", cwd=repo)
    return repo


def test_walkthrough_from_a_git_repository(docker: Any, home: Path, tmp_path: Path) -> None:
    # WALKTHROUGH, "Create a launch job / From a git repository" (and CREATE_JOB, "Git jobs"):
    #   wandb launch --uri https://github.com/wandb/launch-jobs.git --job-name hello-world-git
    #     --project launch-quickstart --build-context jobs/hello_world
    #     --dockerfile Dockerfile.wandb --entry-point "python job.py"
    # (a local file:// repository for GitHub). -r local-container: W&B builds and runs a
    # container; launchctl's direct launch of code defaults to a local process (README).
    repo = _hello_world_repo(tmp_path)
    proc = cli("launch", "--uri", f"file://{repo}", "--job-name", "hello-world-git",
               "--project", "launch-quickstart", "--build-context", "jobs/hello_world",
               "--dockerfile", "Dockerfile.wandb", "--entry-point", "python job.py",
               "-r", "local-container", "--json", timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run = printed_run(proc.stdout)
    assert run["state"] == "finished", proc.stdout + proc.stderr
    assert cli_json("job", "show", "hello-world-git")["name"] == "hello-world-git"
    log = cli("logs", run["id"], check=True).stdout
    assert "hello from job.py" in log
    assert seen_env(log)["WANDB_PROJECT"] == "launch-quickstart"


def test_walkthrough_from_local_source_code(home: Path, tmp_path: Path) -> None:
    # WALKTHROUGH, "Create a launch job / From local source code", from within the directory:
    #   wandb launch --uri . --job-name hello-world-code --project launch-quickstart
    #     --entry-point "python train.py"
    # (train.py prints what it sees instead of wandb.init; no requirements.txt: offline).
    code = tmp_path / "hello"
    make_script(code, "train.py", SHOW_ENV)
    proc = cli_in(code, "launch", "--uri", ".", "--job-name", "hello-world-code",
                  "--project", "launch-quickstart", "--entry-point", "python train.py")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert seen_env(proc.stdout)["WANDB_PROJECT"] == "launch-quickstart"
    job = cli_json("job", "show", "hello-world-code")
    assert job["name"] == "hello-world-code"


# -- Create a queue, connect an agent, submit ---------------------------------------------------


def test_walkthrough_queue_agent_and_submit(
    docker: Any, home: Path, tmp_path: Path, start_agent: StartAgent
) -> None:
    # WALKTHROUGH, "Create a queue": resource Docker, configuration left blank.
    cli("queue", "create", "quickstart", "-r", "local-container", check=True)
    queue = cli_json("queue", "show", "quickstart")
    assert queue["resource"] == "local-container"
    # WALKTHROUGH, "Connect an agent to the queue":
    #   wandb launch-agent --queue <queue-name> --entity <entity-name>
    entity = cli_json("queue", "show", "quickstart")["entity"]
    agent = start_agent("--queue", "quickstart", "--entity", entity)  # start_agent adds 'agent'
    # WALKTHROUGH, "Submit a job to the queue":
    #   wandb launch --docker-image wandb/job_hello_world:main --project launch-quickstart
    #     --queue <queue-name>
    proc = cli("launch", "--docker-image", BUSYBOX, "--project", "launch-quickstart",
               "--queue", "quickstart")  # fmt: skip
    assert proc.returncode == 0, proc.stderr + agent.output()
    run_id = proc.stdout.strip().splitlines()[-1]
    wait_for(lambda: finished(run_id), timeout=120)
    run = cli_json("runs", "show", run_id)
    assert run["state"] == "finished", (run, agent.output())
    assert run["project"] == "launch-quickstart"


# -- Set up Launch with Docker -----------------------------------------------------------------


def test_docker_setup_queue_config_reaches_the_container(
    docker: Any, home: Path, tmp_path: Path
) -> None:
    # DOCKER_SETUP, "Configure a Docker queue": the queue config is docker run's options,
    # the resource args body alone; a bare env name passes the agent's value through.
    # "gpus": "all" is left out (no GPU on the test machine); a tmp folder for /mnt/datasets.
    data = tmp_path / "datasets"
    data.mkdir()
    config = {
        "env": ["MY_ENV_VAR=value", "MY_EXISTING_ENV_VAR"],
        "volume": f"{data}:/mnt/datasets",
        "rm": True,
    }
    cli("queue", "create", "docker-q", "-r", "local-container", "--config", json.dumps(config),
        check=True)  # fmt: skip
    (data / "marker").write_text("seen\n")
    proc = cli("launch", "-d", BUSYBOX, "-q", "docker-q", "-E",
               "sh -c 'echo MY_ENV_VAR=$MY_ENV_VAR; echo EXISTING=$MY_EXISTING_ENV_VAR;"
               " cat /mnt/datasets/marker'", check=True)  # fmt: skip
    run_id = proc.stdout.strip().splitlines()[-1]
    cli("agent", "-q", "docker-q", "--burst", env={"MY_EXISTING_ENV_VAR": "from-agent"},
        check=True, timeout=120)  # fmt: skip
    assert cli_json("runs", "show", run_id)["state"] == "finished"
    log = cli("logs", run_id, check=True).stdout
    assert "MY_ENV_VAR=value" in log
    assert "EXISTING=from-agent" in log
    assert "seen" in log


def _two_queued_runs(tmp_path: Path) -> list[str]:
    make_script(tmp_path / "code", "main.py", "print('ran')\n")
    cli("queue", "create", "q", "-r", "local-process", check=True)
    return [
        cli("launch", "-q", "q", "-u", str(tmp_path / "code"), "-E", "python main.py",
            check=True).stdout.strip().splitlines()[-1]
        for _ in range(2)
    ]  # fmt: skip


def test_docker_setup_agent_cli_max_jobs(home: Path, tmp_path: Path) -> None:
    # DOCKER_SETUP, "Core agent config options / W&B CLI":
    #   wandb launch-agent -q <queue-name> --max-jobs <n>
    runs = _two_queued_runs(tmp_path)
    proc = cli("agent", "-q", "q", "--max-jobs", "2", "--burst", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [cli_json("runs", "show", r)["state"] for r in runs] == ["finished", "finished"]


def test_docker_setup_agent_config_file_with_a_tab_is_one_clear_line(
    home: Path, tmp_path: Path
) -> None:
    # DOCKER_SETUP, "Core agent config options / Config file": the page's launch-config.yaml
    # indents the queue list with a TAB, which YAML forbids; W&B's agent fails on it
    # (yaml.safe_load). launchctl says so in one line, naming the tab.
    cli("queue", "create", "q", "-r", "local-process", check=True)
    path = tmp_path / "launch-config.yaml"
    path.write_text("max_jobs: 2\nqueues:\n\t- q\n")
    before = table_counts(home)
    proc = cli("agent", "-c", str(path), "--burst")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "tab" in lines[0].lower(), proc.stderr
    assert "Traceback" not in proc.stderr
    assert table_counts(home) == before


def test_docker_setup_agent_config_file_with_spaces(home: Path, tmp_path: Path) -> None:
    # DOCKER_SETUP, "Core agent config options / Config file", indented with spaces:
    #   max_jobs: <n>  queues: [- <queue-name>]   and   builder: type: docker
    runs = _two_queued_runs(tmp_path)
    path = tmp_path / "launch-config.yaml"
    path.write_text("max_jobs: 2\nqueues:\n  - q\nbuilder:\n  type: docker\n")
    proc = cli("agent", "-c", str(path), "--burst", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [cli_json("runs", "show", r)["state"] for r in runs] == ["finished", "finished"]


def test_docker_setup_noop_builder_refuses_to_build(home: Path, tmp_path: Path) -> None:
    # DOCKER_SETUP, "Docker image builders": builder: type: noop, "If you don't want the
    # agent to build Docker images". A code job in a container needs a build: the run fails at
    # stage build, saying the agent does not build (issue 11, Agent).
    cli("queue", "create", "q", "-r", "local-container", check=True)
    make_script(tmp_path / "code", "main.py", "print('hi')\n")
    run_id = cli("launch", "-q", "q", "-u", str(tmp_path / "code"), "-E", "python main.py",
                 check=True).stdout.strip()  # fmt: skip
    path = tmp_path / "launch-config.yaml"
    path.write_text("queues:\n  - q\nbuilder:\n  type: noop\n")
    cli("agent", "-c", str(path), "--burst", timeout=120)
    run = cli_json("runs", "show", run_id)
    assert (run["state"], run["stage"]) == ("failed", "build"), run
    assert "does not build" in run["reason"], run["reason"]
    assert "registry-1.docker.io" not in run["reason"]  # no build was tried


def test_docker_setup_accelerator_base_image_queue(home: Path) -> None:
    # DOCKER_SETUP, note under "Configure a Docker queue" (and TF_GPU_FAQ): a queue whose
    # builder.accelerator.base_image is tensorflow/tensorflow:latest-gpu, with "gpus": "all"
    # beside it in the body. Written only: the image cannot be pulled offline.
    config = {
        "gpus": "all",
        "builder": {"accelerator": {"base_image": "tensorflow/tensorflow:latest-gpu"}},
    }
    proc = cli("queue", "create", "tf", "-r", "local-container", "--config", json.dumps(config))
    assert proc.returncode == 0, proc.stderr
    shown = json.dumps(cli_json("queue", "show", "tf"))
    assert "tensorflow/tensorflow:latest-gpu" in shown


# -- Add job to queue, and the FAQ's commands ---------------------------------------------------


def test_add_job_to_queue_with_a_config_json(home: Path, tmp_path: Path) -> None:
    # ADD_JOB, "W&B CLI": config.json with overrides (args [], run_config, entry_point [])
    # and `wandb launch -j <job> -q <queue-name> -e <entity-name> -c path/to/config.json`.
    # An empty entry_point keeps the job's own (W&B: a falsy override is not applied).
    code = tmp_path / "job"
    make_script(code, "train.py", SHOW_ENV)
    cli("job", "create", "code", str(code), "-n", "trainer", "-E", "python train.py",
        check=True)  # fmt: skip
    cli("queue", "create", "q", "-r", "local-process", check=True)
    entity = cli_json("queue", "show", "q")["entity"]
    spec = tmp_path / "config.json"
    spec.write_text(
        json.dumps(
            {
                "overrides": {
                    "args": [],
                    "run_config": {"learning_rate": 0, "epochs": 0},
                    "entry_point": [],
                }
            }
        )
    )
    proc = cli("launch", "-j", "trainer", "-q", "q", "-e", entity, "-c", str(spec))
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.strip().splitlines()[-1]
    cli("agent", "-q", "q", "--burst", check=True, timeout=120)
    assert cli_json("runs", "show", run_id)["state"] == "finished"
    env = seen_env(cli("logs", run_id, check=True).stdout)
    assert json.loads(env["WANDB_CONFIG"]) == {"learning_rate": 0, "epochs": 0}


def test_no_build_faq_launch_a_prebuilt_image_to_a_queue(docker: Any, home: Path) -> None:
    # NO_BUILD_FAQ: wandb launch -d <docker-image-uri> -q <queue-name> -E <entrypoint>
    cli("queue", "create", "q", "-r", "local-container", check=True)
    proc = cli("launch", "-d", BUSYBOX, "-q", "q", "-E", "echo from-the-image", check=True)
    run_id = proc.stdout.strip().splitlines()[-1]
    cli("agent", "-q", "q", "--burst", check=True, timeout=120)
    assert cli_json("runs", "show", run_id)["state"] == "finished"
    assert "from-the-image" in cli("logs", run_id, check=True).stdout


def test_no_build_faq_job_create_image(home: Path) -> None:
    # NO_BUILD_FAQ: wandb job create image <image-name> -p <project> -e <entity>
    cli("queue", "create", "q", "-r", "local-container", check=True)
    entity = cli_json("queue", "show", "q")["entity"]
    proc = cli("job", "create", "image", BUSYBOX, "-p", "hello-world", "-e", entity)
    assert proc.returncode == 0, proc.stderr
    jobs = cli_json("job", "list")
    assert len(jobs) == 1, jobs
    job = cli_json("job", "show", jobs[0]["name"])
    assert BUSYBOX in json.dumps(job)


def test_a_base_image_with_a_run_line_from_the_walkthrough_flags_is_refused(
    home: Path, tmp_path: Path
) -> None:
    # W&B's launch takes --base-image/-B (wandb/cli/cli.py, launch); W&B's builder refuses a
    # base image with white space (wandb/sdk/launch/builder/build.py,
    # _validate_accelerator_base_image; tests/unit_tests/test_launch/test_builder/test_build.py).
    make_script(tmp_path / "code", "train.py", "print('hi')\n")
    cli("queue", "list", check=True)
    before = table_counts(home)
    proc = cli("launch", "-u", str(tmp_path / "code"), "-E", "python train.py", "-q", "q",
               "--base-image", "ubuntu:22.04\nRUN echo PROOF > /proof.txt")  # fmt: skip
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not an image reference" in lines[0], proc.stderr
    assert table_counts(home) == before
