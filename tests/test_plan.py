"""launchctl.agent.plan: a run planned without a store, a file or the process environment."""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Imported here, not while a plan is made (importing reads files):
import launchctl.images.model
import launchctl.store.gpus  # noqa: F401
from launchctl import runas
from launchctl.agent.plan import CACHE_ENV, AgentContext, Plan, plan
from launchctl.errors import LaunchctlError, stage_of
from launchctl.resolve import HostPath
from launchctl.runners import RunnerError
from launchctl.store import Store
from tests.conftest import BUSYBOX, AgentProcess, cli, make_script, wait_for

HOME = Path("/nowhere/home")
BINDIR = "/opt/agent-python/bin"


def agent(**kw: Any) -> AgentContext:
    values: dict[str, Any] = {
        "agent_id": "agent-1",
        "home": HOME,
        "environ": {"PATH": "/usr/bin", "LAUNCHCTL_HOME": "/secret/store", "AGENT_VAR": "env"},
        "env": {},
        "python_bindir": BINDIR,
    }
    values.update(kw)
    return AgentContext(**values)


def run(resource: str = "local-process", **spec: Any) -> dict[str, Any]:
    base = {
        "overrides": {"entry_point": ["python", "train.py"], "args": ["--lr", "0.1"]},
        "author": "alice",
    }
    base.update(spec)
    return {
        "id": "r1",
        "name": "cats-1",
        "project": "cats",
        "entity": "vision",
        "resource": resource,
        "queue_id": 1,
        "queue_name": "q",
        "job_version_id": None,
        "resume_count": 0,
        "devices": None,
        "spec": base,
    }


def queue(resource: str = "local-process", **config: Any) -> dict[str, Any]:
    return {"id": 1, "name": "q", "entity": "vision", "resource": resource, "config": config}


def code_job(**kw: Any) -> dict[str, Any]:
    version = {
        "name": "trainer",
        "entity": "vision",
        "entrypoint": ["python", "main.py"],
        "source_type": "code",
        "source": {"snapshot": "abc", "special": [{"path": "x", "what": "link", "action": "kept"}]},
        "dockerfile": None,
    }
    version.update(kw)
    return version


class _NoEnviron(dict[str, str]):
    def __getitem__(self, key: str) -> str:
        raise AssertionError(f"the plan read os.environ[{key!r}]")

    def get(self, key: str, default: Any = None) -> Any:
        raise AssertionError(f"the plan read os.environ[{key!r}]")

    def items(self) -> Any:
        raise AssertionError("the plan read os.environ")


@contextlib.contextmanager
def no_io(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Inside: opening, stat-ing or resolving a path, or reading os.environ, fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"IO while planning: {args!r}")

    with monkeypatch.context() as m:
        for name in ("open",):
            m.setattr(builtins, name, refuse)
        for name in ("open", "stat", "lstat", "listdir", "scandir", "getcwd"):
            m.setattr(os, name, refuse)
        m.setattr(os.path, "realpath", refuse)
        m.setattr(os.path, "exists", refuse)
        m.setattr(os, "environ", _NoEnviron())
        yield


def test_a_process_run_is_planned_and_launched_without_any_io(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    q = queue(resource_args={"local-process": {"env": {"TOKEN": {"secret": "tok"}, "A": "1"}}})
    with no_io(monkeypatch):
        planned = plan(run(), None, q, agent())
        launch = planned.launch({"tok": "s3cret"}, on_exit=lambda: None)
    assert launch.command == ["python", "train.py", "--lr", "0.1"]
    assert launch.workdir == HOME / "runs" / "r1" / "code"
    assert launch.log_path == HOME / "runs" / "r1" / "output.log"
    assert launch.env["TOKEN"] == "s3cret" and launch.env["A"] == "1"
    assert launch.secrets == ["s3cret"]
    assert planned.secret_names == ["tok"]


def test_a_process_run_gets_w_and_b_s_variables_and_nothing_that_names_the_store() -> None:
    ctx = agent(env={"LAUNCHCTL_USER": "bob", "FROM_CONFIG": "c"})
    env = plan(run(), None, queue(), ctx).launch({}).env
    assert env["WANDB_RUN_ID"] == "r1" and env["WANDB_PROJECT"] == "cats"
    assert env["LAUNCHCTL_RUN_ID"] == "r1" and env["PYTHONUNBUFFERED"] == "1"
    assert env["FROM_CONFIG"] == "c" and env["AGENT_VAR"] == "env"
    assert "LAUNCHCTL_HOME" not in env and "LAUNCHCTL_USER" not in env
    assert env["PATH"] == f"{BINDIR}:/usr/bin"


def test_the_entry_point_comes_from_the_job_unless_the_run_overrides_it() -> None:
    from_job = run(overrides={})
    assert plan(from_job, code_job(), queue(), agent()).entrypoint == ["python", "main.py"]
    assert plan(run(), code_job(), queue(), agent()).entrypoint == ["python", "train.py"]


def test_a_process_run_with_nothing_to_execute_fails_at_stage_agent() -> None:
    with pytest.raises(RunnerError, match="no entry point") as err:
        plan(run(overrides={}), None, queue(), agent())
    assert stage_of(err.value) == "agent"


def test_macros_expand_in_the_admin_s_text_and_a_launcher_s_value_stays_data() -> None:
    q = queue(
        template_variables={"tag": {"type": "string"}},
        resource_args={
            "local-process": {"env": {"WHO": "${run_id}/${AGENT_VAR}/${CONF}", "TAG": "{{tag}}"}}
        },
    )
    r = run(template_variables={"tag": "${AGENT_VAR}"})
    planned = plan(r, None, q, agent(env={"CONF": "from-config"}))
    env = planned.launch({}).env
    assert env["WHO"] == "r1/env/from-config"
    assert env["TAG"] == "${AGENT_VAR}"
    assert planned.unknown == frozenset()


def test_an_unknown_macro_is_left_as_written_and_reported() -> None:
    q = queue(resource_args={"local-process": {"env": {"X": "${NOPE}"}}})
    planned = plan(run(), None, q, agent())
    assert planned.unknown == frozenset({"NOPE"})
    assert planned.launch({}).env["X"] == "${NOPE}"


def test_a_bad_name_or_value_breaks_the_queue_s_rules() -> None:
    bad = run()
    bad["project"] = "../.."
    with pytest.raises(RunnerError, match="the run breaks its queue's rules: invalid project"):
        plan(bad, None, queue(), agent())
    q = queue(template_variables={"n": {"type": "integer", "maximum": 4}})
    with pytest.raises(RunnerError, match="the run breaks its queue's rules") as err:
        plan(run(template_variables={"n": 9}), None, q, agent())
    assert stage_of(err.value) == "agent"


def test_limits_come_from_the_asks_and_the_ceilings() -> None:
    q = queue(
        ceilings={"memory": "4g", "max_run_time": "1h"},
        resource_args={"local-process": {"cpus": 2}},
    )
    limits = plan(run(), None, q, agent()).limits
    assert (limits.cpus, limits.memory, limits.max_run_time) == (2, 4 << 30, 3600)
    over = queue(ceilings={"cpus": 1}, resource_args={"local-process": {"cpus": 2}})
    with pytest.raises(RunnerError, match="above queue q's ceiling"):
        plan(run(), None, over, agent())


def test_a_process_run_sees_only_the_gpus_it_was_given() -> None:
    r = run()
    r["devices"] = "[1]"
    q = queue(resource_args={"local-process": {"gpus": 1}})
    launch = plan(r, None, q, agent()).launch({})
    assert launch.env["CUDA_VISIBLE_DEVICES"] == "1" and launch.devices == ["1"]
    r["devices"] = "[0, 1]"
    with pytest.raises(RunnerError, match="was given GPUs 0,1"):
        plan(r, None, q, agent())


def test_a_run_s_own_env_may_not_name_a_secret() -> None:
    r = run(resource_args={"local-process": {"env": {"T": {"secret": "tok"}}}})
    with pytest.raises(RunnerError, match="only a queue's config may refer to secrets"):
        plan(r, None, queue(), agent())


def test_run_as_is_the_queue_s_for_process_runs_and_refused_for_containers() -> None:
    q = queue(run_as="runner")
    planned = plan(run(), None, q, agent())
    assert planned.run_as == "runner"
    user = runas.RunAs("runner", 1001, 1001, (1001,), "/home/runner", "/bin/bash")
    ctx_environ = {"PATH": "/usr/bin", "LANG": "C", "TOKEN": "agent's"}
    launch = plan(run(), None, q, agent(environ=ctx_environ)).launch({}, run_as=user)
    assert launch.run_as == user
    assert launch.env["HOME"] == "/home/runner" and launch.env["USER"] == "runner"
    assert "TOKEN" not in launch.env and launch.env["LANG"] == "C"
    with pytest.raises(RunnerError, match="run_as applies to local-process runs only"):
        plan(run("local-container"), code_job(), queue("local-container", run_as="x"), agent())


def test_a_bind_cache_is_the_host_path_for_a_process_and_the_target_in_a_container() -> None:
    process = plan(run(), None, queue(artifact_cache="/cache"), agent()).launch({})
    assert all(process.env[name] == "/cache" for name in CACHE_ENV)
    q = queue("local-container", artifact_cache={"volume": "wandb", "path": "/c"})
    container = plan(run("local-container"), code_job(), q, agent()).launch({})
    assert container.cache is not None and container.cache.kind == "volume"
    assert all(container.env[name] == "/c" for name in CACHE_ENV)


def test_a_launcher_s_value_in_a_host_path_is_checked_as_text_and_left_for_the_host() -> None:
    q = queue(
        "local-container",
        template_variables={"ds": {"type": "string"}},
        resource_args={"local-container": {"volume": ["/data/{{ds}}:/data"]}},
    )
    planned = plan(run("local-container", template_variables={"ds": "cats"}), code_job(), q,
                   agent())  # fmt: skip
    assert planned.host_paths == (
        HostPath("queue q: volume '/data/{{ds}}:/data'", "/data/cats", "/data"),
    )
    with pytest.raises(RunnerError, match=r"'\.\.' is not allowed"):
        plan(run("local-container", template_variables={"ds": ".."}), code_job(), q, agent())


def test_an_image_run_renders_image_uri_at_once_and_builds_nothing() -> None:
    q = queue("local-container", resource_args={"local-container": {"env": {"I": "${image_uri}"}}})
    r = run("local-container", docker={"docker_image": "busybox:1"})
    planned = plan(r, None, q, agent())
    assert planned.build is None and planned.image == "busybox:1"
    assert planned.launch({}).env["I"] == "busybox:1"


def test_a_code_run_is_built_and_rendered_again_with_its_image() -> None:
    q = queue(
        "local-container",
        registry={"url": "localhost:5000", "username": "u", "password": {"secret": "regpw"}},
        builder={"index_url": {"secret": "index"}, "accelerator": {"base_image": "cuda:12"}},
        resource_args={"local-container": {"env": {"I": "${image_uri}"}}},
    )
    r = run("local-container", overrides={"dockerfile": "Dockerfile.gpu"})
    planned = plan(r, code_job(), q, agent(builder={"build_args": {"A": 1}}))
    assert planned.image is None and planned.build is not None
    assert planned.resource_args["env"]["I"] == "${image_uri}"  # pending, not unknown
    assert planned.unknown == frozenset()
    assert planned.secret_names == ["regpw", "index"]
    secrets = {"regpw": "pw", "index": "https://tok@pypi.example/simple"}
    request = planned.build_request(secrets)
    assert (request.job_name, request.dockerfile, request.base_image) == (
        "trainer", "Dockerfile.gpu", "cuda:12"
    )  # fmt: skip
    assert request.registry == "localhost:5000"
    assert request.registry_auth == {"username": "u", "password": "pw"}
    assert request.index_url == secrets["index"] and request.build_args == {"A": "1"}
    assert request.source_dir == planned.workdir
    assert planned.build.special[0]["path"] == "x"
    built = planned.with_image("localhost:5000/trainer:abc")
    launch = built.launch(secrets)
    assert launch.env["I"] == "localhost:5000/trainer:abc"
    assert launch.image == "localhost:5000/trainer:abc"
    assert launch.registry_auth == {"username": "u", "password": "pw"}
    assert "pw" in launch.secrets and "tok" in launch.secrets and secrets["index"] in launch.secrets
    assert planned.masks(secrets) == launch.secrets


def test_a_build_network_other_than_the_known_ones_fails_at_stage_agent() -> None:
    q = queue("local-container", builder={"network": "container:x"})
    with pytest.raises(LaunchctlError, match=r"builder\.network must be one of") as err:
        plan(run("local-container"), code_job(), q, agent())
    assert stage_of(err.value) == "agent"


def test_a_container_run_with_no_image_and_no_job_fails_at_stage_agent() -> None:
    with pytest.raises(RunnerError, match="names no image and no job"):
        plan(run("local-container"), None, queue("local-container"), agent())


def test_masks_leave_out_what_was_not_read() -> None:
    q = queue(
        registry={"url": "r:5000", "username": "u", "password": {"secret": "regpw"}},
        resource_args={"local-process": {"env": {"T": {"secret": "tok"}}}},
    )
    planned: Plan = plan(run(), None, q, agent())
    assert planned.masks({"tok": "v"}) == ["v"]


# -- adoption after a restart plans the run again ----------------------------------------------


def test_an_adopted_run_keeps_its_max_run_time(
    store: Store, tmp_path: Path, start_agent: Callable[..., AgentProcess]
) -> None:
    code = make_script(tmp_path / "slow", "main.py", "import time\ntime.sleep(300)\n")
    config = {"resource_args": {"local-process": {"max_run_time": 3}}}
    cli("queue", "create", "timed", "--config", json.dumps(config), check=True)
    run_id = cli("launch", "-q", "timed", "-u", str(code.parent), "-E", "python main.py",
                 check=True).stdout.strip()  # fmt: skip
    first = start_agent("-q", "timed")
    wait_for(lambda: store.runs.state(run_id) == "running", what="run to start")
    first.signal(signal.SIGKILL)
    first.wait(timeout=10)
    cli("agent", "-q", "timed", "--burst", "--grace", "1", check=True, timeout=60)
    run = store.runs.get(run_id)
    assert (run["state"], run["stage"], run["reason"]) == ("failed", "run", "timeout")
    notes = [e["message"] for e in store.runs.events(run_id)]
    assert "adopted: following it again after its agent was lost" in notes


def test_an_adopted_container_s_later_output_has_its_secrets_masked(
    store: Store, docker: Any, tmp_path: Path, start_agent: Callable[..., AgentProcess]
) -> None:
    value = "sk-" + os.urandom(16).hex()
    proc = cli("secret", "set", "api-key", input=value)
    assert proc.returncode == 0, proc.stderr
    sync = tmp_path / "sync"
    sync.mkdir()
    options = {"env": {"KEY": {"secret": "api-key"}}, "volume": f"{sync}:/sync"}
    config = {"resource_args": {"local-container": options}}
    cli("queue", "create", "box", "-r", "local-container", "--config", json.dumps(config),
        check=True)  # fmt: skip
    # It prints the secret only once the test says so: after its first agent is gone.
    script = "sh -c 'echo one; until [ -e /sync/go ]; do sleep 0.1; done; echo two $KEY; exit 3'"
    run_id = cli("launch", "-q", "box", "-d", BUSYBOX, "-E", script, check=True).stdout.strip()
    first = start_agent("-q", "box")
    wait_for(lambda: store.runs.state(run_id) == "running", what="container to start")
    first.signal(signal.SIGKILL)
    first.wait(timeout=10)
    start_agent("-q", "box", "--resume-queues")
    adopted = "adopted: following it again after its agent was lost"
    wait_for(lambda: adopted in [e["message"] for e in store.runs.events(run_id)], what="adoption")
    (sync / "go").touch()
    wait_for(lambda: store.runs.state(run_id) == "failed", timeout=60, what="container's end")
    log = cli("logs", run_id, check=True).stdout
    assert log.splitlines() == ["one", "two ***"]


def test_secrets_are_read_at_once_and_adoption_leaves_out_a_missing_one(home: Path) -> None:
    from launchctl.agent.starter import read_secrets

    assert cli("secret", "set", "here", input="v").returncode == 0
    with pytest.raises(LaunchctlError, match="secret 'gone' is not set") as err:
        read_secrets(["here", "gone"])
    assert stage_of(err.value) == "agent"
    assert read_secrets(["here", "gone"], missing_ok=True) == {"here": "v"}
    assert read_secrets(["gone"], missing_ok=True) == {}
