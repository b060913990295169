"""W&B's queue configs, as W&B's docs and code write them, through launchctl (issue 11).

Each case is an input from W&B's docs or tests, with W&B's verdict (from W&B's own
validator where it has one: ``wandb.sdk.launch.utils.validate_local_container_resource_args``
is called as an oracle) and the effect a run sees: the container's settings through
``docker inspect``, or its environment.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from launchctl import queues
from launchctl.errors import ConfigError
from launchctl.runners.base import Launch
from launchctl.runners.local_container import LocalContainerRunner
from tests.conftest import BUSYBOX, cli, cli_json, make_script

wandb_utils = pytest.importorskip("wandb.sdk.launch.utils")
LaunchError = pytest.importorskip("wandb.sdk.launch.errors").LaunchError


def wandb_verdict(docker_args: dict[str, Any]) -> str | None:
    """W&B's own verdict on a docker queue's options: None (accepted) or its message."""
    try:
        wandb_utils.validate_local_container_resource_args(docker_args)
    except LaunchError as exc:
        return str(exc)
    return None


def stored(name: str) -> dict[str, Any]:
    return cli_json("queue", "show", name)  # type: ignore[no-any-return]


# -- 1. Shapes: the body alone (W&B's queue editor) or wrapped in resource_args -------------

# W&B docs, "Tutorial: Set up W&B Launch with Docker" (guides/launch/setup-launch-docker):
# the docker queue's config is docker run's options alone.
DOCS_DOCKER_BODY = {"env": ["MY_ENV_VAR=value", "MY_EXISTING_ENV_VAR"], "gpus": "all"}
# W&B docs, "Tutorial: Set up W&B Launch on Kubernetes" (guides/launch/setup-launch-
# kubernetes), the Job spec queue config, verbatim.
DOCS_K8S_JOB = """\
spec:
  template:
    spec:
      containers:
        - env:
            - name: MY_ENV_VAR
              value: some-value
          resources:
            requests:
              cpu: 1000m
              memory: 1Gi
metadata:
  labels:
    queue: k8s-test
namespace: wandb
"""
# Same page, the Kubeflow custom resource queue config (its first lines): keyed by the
# resource's name.
DOCS_K8S_KUBEFLOW = """\
kubernetes:
  kind: PyTorchJob
  spec:
    pytorchReplicaSpecs:
      Master:
        replicas: 1
        template:
          spec:
            containers:
              - name: pytorch
                image: '${image_uri}'
                imagePullPolicy: Always
        restartPolicy: Never
"""


@pytest.mark.parametrize(
    ("written", "resource"),
    [
        pytest.param(DOCS_DOCKER_BODY, "local-container", id="docker-body-docs"),
        pytest.param(
            {"resource_args": {"local-container": DOCS_DOCKER_BODY}},
            "local-container",
            id="docker-wrapped",
        ),
        pytest.param(yaml.safe_load(DOCS_K8S_JOB), "kubernetes", id="k8s-job-body-docs"),
        pytest.param(
            {"resource_args": {"kubernetes": yaml.safe_load(DOCS_K8S_JOB)}},
            "kubernetes",
            id="k8s-job-wrapped",
        ),
    ],
)
def test_body_and_wrapped_shapes_have_one_canonical_form(
    written: dict[str, Any], resource: str
) -> None:
    # Both shapes mean the same queue: resource_args.<resource> holds the body.
    body = written.get("resource_args", {}).get(resource, written)
    assert queues.canonical(written, resource) == {"resource_args": {resource: body}}


def test_kubeflow_config_keyed_by_resource_is_the_body_wrapped() -> None:
    # W&B docs (setup-launch-kubernetes, Kubeflow): `kubernetes: {kind: PyTorchJob, ...}`.
    written = yaml.safe_load(DOCS_K8S_KUBEFLOW)
    assert queues.canonical(written, "kubernetes") == {"resource_args": written}
    # The kubernetes runner (issue 14) runs batch/v1 Jobs: a custom resource is refused.
    proc = cli("queue", "create", "k8s", "-r", "kubernetes", "-c", DOCS_K8S_KUBEFLOW)
    assert proc.returncode != 0 and "launchctl runs batch/v1 Jobs" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("written", "message"),
    [
        # A body key that is also a queue key (builder) is the body's: W&B reads it there.
        pytest.param(
            {"env": ["A=1"], "builder": {"accelerator": {"base_image": "x"}}},
            None,
            id="body-builder",
        ),
        # Only queue keys: launchctl's own form (the queue's builder).
        pytest.param({"builder": {"accelerator": {"base_image": "x"}}}, None, id="queue-builder"),
        # A body that also holds a queue-only key: nothing says which was meant.
        pytest.param(
            {"env": ["A=1"], "ceilings": {"cpus": 2}}, "'ceilings' is a queue setting", id="mixed"
        ),
    ],
)
def test_the_shape_rule_never_misreads_a_key(written: dict[str, Any], message: str | None) -> None:
    if message is not None:
        with pytest.raises(ConfigError, match=message):
            queues.canonical(written, "local-container")
        return
    out = queues.canonical(written, "local-container")
    if "env" in written:
        assert out == {"resource_args": {"local-container": written}}
    else:
        assert out == written


def test_queue_create_and_edit_take_the_body_and_show_it_as_written(tmp_path: Path) -> None:
    # W&B docs (setup-launch-docker): a docker queue's config, as a YAML file.
    text = "env:\n  - MY_ENV_VAR=value\n  - MY_EXISTING_ENV_VAR\ngpus: all\n"
    (tmp_path / "q.yaml").write_text(text)
    cli("queue", "create", "dq", "-r", "local-container", "-c", str(tmp_path / "q.yaml"),
        check=True)  # fmt: skip
    row = stored("dq")
    assert row["config"] == {"resource_args": {"local-container": DOCS_DOCKER_BODY}}
    assert row["config_written"] == text
    shown = cli("queue", "show", "dq", check=True).stdout
    assert "config (as written):\nenv:\n  - MY_ENV_VAR=value" in shown
    # edit: the same queue, written wrapped this time; one stored form again.
    wrapped = json.dumps({"resource_args": {"local-container": {"env": ["B=2"]}}})
    cli("queue", "edit", "dq", "-c", wrapped, check=True)
    row = stored("dq")
    assert row["config"] == {"resource_args": {"local-container": {"env": ["B=2"]}}}
    assert row["config_written"] == wrapped


# -- 2. docker run's options: W&B's allow-list, W&B's refusals, W&B's names ---------------

# wandb/sdk/launch/utils.py _DOCKER_ALLOWED_RESOURCE_ARGS (0.31.0): each accepted here too,
# but `cpu` and `command`, which docker run itself refuses (launchctl says so at write).
ALLOWED_VALUES = {
    "cpu-period": 100000, "cpu-quota": 50000, "cpu-shares": 512, "cpus": 1.5,
    "cpuset-cpus": "0", "cpuset-mems": "0", "e": "A=1", "env": ["A=1"], "gpus": "all",
    "m": "256m", "memory": "256m", "memory-reservation": "128m", "memory-swap": "512m",
    "name": "x", "pids-limit": 50, "platform": "linux/amd64", "shm-size": "64m",
    "ulimit": "nofile=512:1024", "w": "/tmp", "workdir": "/tmp", "cpu": 2, "command": "x",
}  # fmt: skip


@pytest.mark.parametrize("option", sorted(ALLOWED_VALUES), ids=lambda o: f"allowed-{o}")
def test_each_option_wandb_allows_is_accepted(option: str) -> None:
    body = {option: ALLOWED_VALUES[option]}
    assert wandb_verdict(body) is None  # W&B's verdict (its allow-list)
    proc = cli("queue", "create", "q", "-r", "local-container", "-c", json.dumps(body))
    if option in ("cpu", "command"):  # deliberate: docker run has no such option
        assert proc.returncode == 1 and "docker run has no --" in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr


# W&B's tests (tests/unit_tests/test_launch/test_runner/test_local_container.py,
# test_local_container_rejects_unsafe_resource_args) and its docstring's list of isolation
# flags it refuses: refused here too, in W&B's words.
@pytest.mark.parametrize(
    "body",
    [
        {"privileged": True},
        {"cap-add": "SYS_ADMIN"},
        {"pid": "host"},
        {"device": "/dev/sda"},
        {"security-opt": "seccomp=unconfined"},
        {"--privileged": True},
    ],
    ids=lambda b: f"refused-{next(iter(b))}",
)
def test_options_wandb_refuses_for_safety_are_refused_in_its_words(
    body: dict[str, Any], home: Path
) -> None:
    verdict = wandb_verdict(body)
    assert verdict is not None and verdict.startswith("Unsupported resource_args.local-container")
    proc = cli("queue", "create", "q", "-r", "local-container", "-c", json.dumps(body))
    assert proc.returncode == 1
    assert verdict.split(". Supported")[0] in proc.stderr  # the same sentence
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not (home / "queues").exists() and "q" not in {
        q["name"] for q in cli_json("queue", "list")
    }


# W&B's test_local_container_rejects_value_smuggling: a mapping or a bare flag as a value.
@pytest.mark.parametrize(
    "body", [{"memory": True}, {"shm-size": False}], ids=["bool-memory", "bool-shm"]
)
def test_a_flag_value_where_docker_wants_one_is_refused_as_wandb_does(body: dict[str, Any]) -> None:
    verdict = wandb_verdict(body)
    assert verdict is not None and "must be a single string or numeric value" in verdict
    proc = cli("queue", "create", "q", "-r", "local-container", "-c", json.dumps(body))
    assert proc.returncode == 1 and "must be a single string or numeric value" in proc.stderr


def test_rm_from_wandb_docs_is_accepted_as_a_no_op_with_a_note() -> None:
    # W&B docs (setup-launch-docker) describe docker flags as booleans (`"rm": true`);
    # W&B 0.31.0's validator refuses it (a docs/code disagreement, written in the notes):
    # here it is harmless (containers are always removed), so accepted and noted.
    body = {"env": ["A=1"], "rm": True}
    assert wandb_verdict(body) is not None
    cli("queue", "create", "q", "-r", "local-container", "-c", json.dumps(body), check=True)
    row = stored("q")
    assert any(n.startswith("resource_args.local-container.rm:") for n in row["notes"])
    assert (
        "note: resource_args.local-container.rm: accepted, changes nothing"
        in cli("queue", "show", "q", check=True).stdout
    )


@pytest.mark.parametrize(
    ("written", "option", "inspected"),
    [
        # W&B's validator reads --shm_size, SHM_SIZE and shm-size as one option (utils.py
        # _docker_arg_name); docker's short names m and w are in W&B's list.
        ({"--shm_size": "64m"}, "shm-size", ("ShmSize", 64 << 20)),
        ({"SHM_SIZE": "64m"}, "shm-size", ("ShmSize", 64 << 20)),
        ({"m": "256m"}, "memory", ("Memory", 256 << 20)),
        ({"cpu-shares": 512}, "cpu-shares", ("CpuShares", 512)),
        ({"cpuset-cpus": "0"}, "cpuset-cpus", ("CpusetCpus", "0")),
        ({"memory": "256m", "memory-swap": "-1"}, "memory-swap", ("MemorySwap", -1)),
        ({"memory-reservation": "128m"}, "memory-reservation", ("MemoryReservation", 128 << 20)),
        ({"gpus": "all"}, "gpus", ("DeviceRequests", "all")),
    ],
    ids=[
        "--shm_size",
        "SHM_SIZE",
        "m",
        "cpu-shares",
        "cpuset-cpus",
        "memory-swap",
        "memory-reservation",
        "gpus-all",
    ],
)
def test_wandb_option_names_reach_the_container(
    docker: Any, tmp_path: Path, written: dict[str, Any], option: str, inspected: tuple[str, Any]
) -> None:
    assert wandb_verdict(written) is None  # W&B accepts it
    cli("queue", "create", "q", "-r", "local-container", "-c", json.dumps(written), check=True)
    args = stored("q")["config"]["resource_args"]["local-container"]
    assert option in args  # stored under its one name
    # The container the runner makes from the stored config (created, not started: no GPU).
    launch = Launch(run={"id": "compatopt"}, entrypoint=["true"], args=[], env={},
                    workdir=tmp_path, log_path=tmp_path / "log", resource_args=args,
                    image=BUSYBOX)  # fmt: skip
    container = LocalContainerRunner(docker).create(launch)
    try:
        host = docker.api.inspect_container(container.id)["HostConfig"]
    finally:
        container.remove(force=True)
    key, value = inspected
    if value == "all":
        assert [(r["Count"], r["Capabilities"]) for r in host[key]] == [(-1, [["gpu"]])]
    else:
        assert host[key] == value


# -- 3. env: a bare NAME passes the agent's value, as `docker run -e NAME` does -----------


def test_env_list_from_wandb_docs_reaches_the_container(docker: Any, tmp_path: Path) -> None:
    # W&B docs (setup-launch-docker): env as a list, `NAME=value` and a bare NAME that the
    # agent's environment fills (docker run --env MY_EXISTING_ENV_VAR); an unset bare name
    # stays unset, as docker leaves it. And env as a mapping keeps working beside it.
    body = {"env": ["MY_ENV_VAR=value", "MY_EXISTING_ENV_VAR", "NOT_IN_AGENT"],
            "e": {"AS_MAPPING": "yes"}}  # fmt: skip
    assert wandb_verdict({"env": body["env"]}) is None
    cli("queue", "create", "dq", "-r", "local-container", "-c", json.dumps(body), check=True)
    run_id = cli("launch", "-q", "dq", "-d", BUSYBOX, "-E", "env", check=True).stdout.strip()
    env = {**os.environ, "MY_EXISTING_ENV_VAR": "from-the-agent"}
    env.pop("NOT_IN_AGENT", None)
    proc = cli("agent", "-q", "dq", "--burst", env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    log = cli("logs", run_id, check=True).stdout.splitlines()
    assert "MY_ENV_VAR=value" in log
    assert "MY_EXISTING_ENV_VAR=from-the-agent" in log
    assert "AS_MAPPING=yes" in log
    assert not any(line.startswith("NOT_IN_AGENT") for line in log)


def test_env_bare_name_on_a_process_queue_passes_the_agents_value(tmp_path: Path) -> None:
    # W&B's local-process runner reads no resource args (runner/local_process.py): a
    # launchctl extension, the same rule as docker's; a LAUNCHCTL_ name is refused.
    cli("queue", "create", "pq", "-c", '{"env": ["FROM_AGENT", "X=1"]}', check=True)
    proc = cli("queue", "create", "bad", "-c", '{"env": ["LAUNCHCTL_HOME"]}')
    assert proc.returncode == 1 and "launchctl's own setting" in proc.stderr
    make_script(tmp_path / "code", "run.sh", 'echo "seen=$FROM_AGENT/$X"\n')
    run_id = cli("launch", "-q", "pq", "-u", str(tmp_path / "code"), "-E", "sh run.sh",
                 check=True).stdout.strip()  # fmt: skip
    proc = cli("agent", "-q", "pq", "--burst", env={"FROM_AGENT": "agent-value"})
    assert proc.returncode == 0, proc.stderr
    assert "seen=agent-value/1" in cli("logs", run_id, check=True).stdout


@pytest.mark.parametrize("written", ["m", "--memory", "MEMORY"])
def test_a_wandb_spelling_of_memory_is_held_to_the_queues_ceiling(written: str) -> None:
    # W&B's validator reads these as memory (utils.py _docker_arg_name, its allow-list's
    # "m"); the queue's ceiling reads the same option, so a spelling cannot step past it.
    assert wandb_verdict({written: "8g"}) is None
    config = {"ceilings": {"memory": "1g"}}
    cli("queue", "create", "capped", "-r", "local-container", "-c", json.dumps(config),
        check=True)  # fmt: skip
    proc = cli("launch", "-q", "capped", "-d", BUSYBOX, "-E", "true",
               "-R", json.dumps({"local-container": {written: "8g"}}))  # fmt: skip
    assert proc.returncode != 0 and "memory" in proc.stderr, proc.stderr
    assert cli_json("runs", "list") == []
