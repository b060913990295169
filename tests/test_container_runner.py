"""The local-container runner on a real Docker engine: images as they are, options, cancel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from launchctl.runners import Launch
from launchctl.runners.local_container import LocalContainerRunner, container_options
from launchctl.store import Store
from tests.conftest import BUSYBOX, StartAgent, cli, cli_json, wait_for


def container_queue(name: str = "box", config: dict[str, Any] | None = None) -> None:
    args = ["queue", "create", name, "--resource", "local-container"]
    if config is not None:
        args += ["--config", json.dumps(config)]
    cli(*args, check=True)


def test_image_runs_as_it_is_with_the_launch_environment(docker: Any) -> None:
    container_queue(config={"resource_args": {"local-container": {"env": {"EXTRA": "yes"}}}})
    proc = cli(
        "launch",
        "-q",
        "box",
        "-d",
        BUSYBOX,
        "-E",
        "sh -c 'echo $WANDB_RUN_ID $WANDB_LAUNCH_QUEUE_NAME $EXTRA $WANDB_CONFIG'",
        "--set",
        "lr=0.5",
        "--json",
    )
    run = json.loads(proc.stdout)
    cli("agent", "-q", "box", "--burst", check=True)
    out = cli("logs", run["id"], check=True).stdout.strip()
    assert out == f'{run["id"]} box yes {{"lr": 0.5}}'
    shown = cli_json("runs", "show", run["id"])
    assert (shown["state"], shown["exit_code"], shown["image"]) == ("finished", 0, BUSYBOX)
    # Logs are kept in the run's log file; the container itself is removed.
    assert (
        docker.containers.list(all=True, filters={"label": f"launchctl.run_id={run['id']}"}) == []
    )


def test_direct_launch_in_a_container_exits_with_the_containers_status(docker: Any) -> None:
    # A direct launch of an image runs in a container without -r, as W&B's direct launch does.
    proc = cli("launch", "-d", BUSYBOX, "-E", "sh -c 'echo bye; exit 5'")
    assert proc.returncode == 5
    assert proc.stdout == "bye\n"
    run = cli_json("runs", "list")[0]
    assert (run["state"], run["stage"], run["reason"]) == ("failed", "run", "exit code 5")


def test_container_carries_labels_and_the_mapped_options(
    docker: Any, store: Store, tmp_path: Path
) -> None:
    args = {
        "cpus": 1.5,
        "memory": "256m",
        "shm-size": "64m",
        "ulimit": "nofile=512:1024",
        "workdir": "/tmp",
        "pids-limit": 50,
        "env": ["A=1"],
        "volume": f"{tmp_path}/data:/data:ro",  # beside the store (tmp_path/home), not above
        "network": "none",
    }
    run = {"id": "optstest", "queue_name": "box"}
    launch = Launch(run=run, entrypoint=["sh"], args=["-c", "true"], env={"B": "2"},
                    workdir=tmp_path, log_path=tmp_path / "log", resource_args=args,
                    image=BUSYBOX, agent_id="agent-x")  # fmt: skip
    container = LocalContainerRunner(docker).create(launch)
    try:
        attrs = docker.api.inspect_container(container.id)
    finally:
        container.remove(force=True)
    host = attrs["HostConfig"]
    assert attrs["Config"]["Labels"] == {
        "launchctl.run_id": "optstest",
        "launchctl.queue": "box",
        "launchctl.agent": "agent-x",
    }
    assert {"A=1", "B=2"} <= set(attrs["Config"]["Env"])
    assert host["NanoCpus"] == 1_500_000_000
    assert host["Memory"] == 256 * 1024 * 1024
    assert host["ShmSize"] == 64 * 1024 * 1024
    assert host["Ulimits"] == [{"Name": "nofile", "Soft": 512, "Hard": 1024}]
    assert host["PidsLimit"] == 50
    assert host["NetworkMode"] == "none"
    assert host["Binds"] == [f"{tmp_path}/data:/data:ro"]
    assert attrs["Config"]["WorkingDir"] == "/tmp"


@pytest.mark.parametrize(
    ("gpus", "expected"),
    [
        ("all", {"Count": -1, "DeviceIDs": []}),
        (2, {"Count": 2, "DeviceIDs": []}),
        ("device=0,1", {"Count": 0, "DeviceIDs": ["0", "1"]}),
    ],
)
def test_gpus_option_becomes_the_right_device_request(
    docker: Any, tmp_path: Path, gpus: Any, expected: dict[str, Any]
) -> None:
    # No GPU here: the container is created (not started) and its device request inspected.
    launch = Launch(run={"id": "gputest"}, entrypoint=["true"], args=[], env={},
                    workdir=tmp_path, log_path=tmp_path / "log",
                    resource_args={"gpus": gpus}, image=BUSYBOX)  # fmt: skip
    container = LocalContainerRunner(docker).create(launch)
    try:
        requests = docker.api.inspect_container(container.id)["HostConfig"]["DeviceRequests"]
    finally:
        container.remove(force=True)
    assert len(requests) == 1
    request = requests[0]
    assert request["Capabilities"] == [["gpu"]]
    assert request["Count"] == expected["Count"]
    assert (request["DeviceIDs"] or []) == expected["DeviceIDs"]


def test_an_option_outside_the_list_is_refused() -> None:
    proc = cli(
        "queue",
        "create",
        "box",
        "--resource",
        "local-container",
        "--config",
        '{"resource_args": {"local-container": {"privileged": true}}}',
    )
    assert proc.returncode == 1
    # W&B's words (wandb/sdk/launch/utils.py validate_local_container_resource_args)
    assert "Unsupported resource_args.local-container option 'privileged'" in proc.stderr
    assert "Supported options are: builder, cpu-period" in proc.stderr


def test_cancel_stops_a_running_container(
    docker: Any, store: Store, start_agent: StartAgent
) -> None:
    container_queue()
    run_id = cli(
        "launch", "-q", "box", "-d", BUSYBOX, "-E", "sh -c 'echo up; sleep 300'", check=True
    ).stdout.strip()
    start_agent("-q", "box", "--grace", "1")
    label = {"label": f"launchctl.run_id={run_id}"}
    wait_for(lambda: docker.containers.list(filters=label), what="container to run")
    wait_for(lambda: "up" in cli("logs", run_id).stdout, what="first log line")
    cli("runs", "cancel", run_id, check=True)
    wait_for(lambda: store.runs.state(run_id) == "stopped", what="stopped state")
    assert store.runs.get(run_id)["reason"] == "cancelled"
    wait_for(lambda: not docker.containers.list(all=True, filters=label), what="container removal")


def test_a_missing_image_fails_the_run_at_the_run_stage(docker: Any, store: Store) -> None:
    container_queue()
    run_id = cli(
        "launch", "-q", "box", "-d", "localhost:5000/launchctl-test/nothing-here:1", check=True
    ).stdout.strip()
    cli("agent", "-q", "box", "--burst", check=True)
    run = store.runs.get(run_id)
    assert (run["state"], run["stage"]) == ("failed", "run")
    assert run["reason"].startswith("pull of localhost:5000/launchctl-test/nothing-here:1 failed")


def test_the_artifact_cache_is_shared_between_runs(docker: Any, store: Store) -> None:
    volume = "launchctl-test-cache"
    container_queue(config={"artifact_cache": volume})
    try:
        write = cli(
            "launch",
            "-q",
            "box",
            "-d",
            BUSYBOX,
            "-E",
            "sh -c 'echo weights > $LAUNCHCTL_CACHE_DIR/model && echo $WANDB_CACHE_DIR'",
            check=True,
        ).stdout.strip()
        read = cli(
            "launch",
            "-q",
            "box",
            "-d",
            BUSYBOX,
            "-E",
            "sh -c 'cat $WANDB_ARTIFACT_DIR/model'",
            check=True,
        ).stdout.strip()
        cli("agent", "-q", "box", "--burst", check=True)
        assert cli("logs", write, check=True).stdout.strip() == "/launchctl-cache"
        assert cli("logs", read, check=True).stdout.strip() == "weights"
    finally:
        docker.volumes.get(volume).remove(force=True)


def test_without_an_engine_the_run_fails_saying_so_and_other_queues_go_on(
    store: Store, tmp_path: Path
) -> None:
    container_queue()
    box = cli("launch", "-q", "box", "-d", BUSYBOX, "-E", "true", check=True).stdout.strip()
    local = cli(
        "launch",
        "-q",
        "default",
        "-u",
        str(Path(__file__).parent.parent / "examples/hello"),
        "-E",
        "python train.py",
        check=True,
    ).stdout.strip()
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock", "LAUNCHCTL_ENGINE_WAIT": "0"}
    proc = cli("agent", "-q", "box", "-q", "default", "--burst", env=env)
    assert proc.returncode == 0
    failed = store.runs.get(box)
    assert (failed["state"], failed["stage"]) == ("failed", "run")
    assert "the Docker engine is not reachable" in failed["reason"]
    assert store.runs.state(local) == "finished"


def test_options_map_env_lists_and_dicts(tmp_path: Path) -> None:
    launch = Launch(
        run={"id": "x"},
        entrypoint=[],
        args=["a"],
        env={"K": "1"},
        workdir=tmp_path,
        log_path=tmp_path / "l",
        resource_args={"e": {"C": 3}},
        image="img",
    )
    opts = container_options(launch)
    assert opts["environment"] == {"K": "1", "C": "3"}
    assert opts["command"] == ["a"] and "entrypoint" not in opts
