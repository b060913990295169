"""The runner registry is the one list of resource types (issue 10, item 2), and runner
failures are errors of the one root, carrying their stage (item 5)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from launchctl import errors, queues
from launchctl.agent import Agent, AgentOptions
from launchctl.agent.config import AGENT_KEYS, load_agent_config
from launchctl.errors import ConfigError, LaunchctlError, RunnerError, stage_of
from launchctl.launch import LaunchRequest, prepare_spec, submit
from launchctl.runners import local_container, local_process, registry
from launchctl.store import Store
from tests.conftest import cli, table_counts, wait_for


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Registrations made in a test are forgotten after it."""
    monkeypatch.setattr(registry, "_TYPES", dict(registry.types()))
    yield


# -- the registry --------------------------------------------------------------------------
def test_the_registry_holds_what_the_runner_modules_declare() -> None:
    found = registry.types()
    assert list(found) == sorted(found)
    assert {"kubernetes", "local-container", "local-process", "slurm"} <= set(found)  # issue 14
    for module, runner in (
        (local_process, local_process.LocalProcessRunner),
        (local_container, local_container.LocalContainerRunner),
    ):
        kind = found[runner.resource]
        assert kind.runner is runner and kind.options == module.OPTIONS
        assert isinstance(registry.get(runner.resource), runner)
    assert found["local-container"].check_config is local_container.config_mount_problem
    assert found["local-process"].check_config is None
    kubernetes = found["kubernetes"]  # issue 14: takes the Job manifest's own schema
    assert kubernetes.options is None and kubernetes.check_config is not None


def test_reading_the_registry_does_not_import_docker() -> None:
    """``queue create`` reads it: a runner module keeps its heavy imports in functions."""
    code = (
        "import sys\n"
        "from launchctl import queues\n"
        "queues.check_resource('local-container')\n"
        "queues.validate_config({'resource_args': {'local-container': {'memory': '1g'}}},"
        " 'local-container')\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('docker', 'jinja2'))\n"
        "print(heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_a_runner_is_found_by_importing_its_own_module_alone() -> None:
    """An agent (and a direct launch) asks for one runner: only that runner's module is
    imported, and the whole list is read only when something asks for it."""
    code = (
        "import sys\n"
        "from launchctl.runners import registry\n"
        "runner = registry.get('local-process')\n"
        "mods = sorted(m for m in sys.modules if m.startswith('launchctl.runners.')"
        " and m.split('.')[-1] in ('slurm', 'kubernetes', 'local_container', 'local_process'))\n"
        "print(type(runner).__name__, mods)\n"
        "print(list(registry.types()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == "LocalProcessRunner ['launchctl.runners.local_process']"
    assert out[1] == "['kubernetes', 'local-container', 'local-process', 'slurm']"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nomad", "resource 'nomad' is not available in this build of launchctl"),
        ("sagemaker", "W&B Launch's Amazon SageMaker runner, not available in launchctl"),
        ("gcp-vertex", "W&B Launch's Google Vertex AI runner, not available in launchctl"),
        ("local", "W&B's older name for local-container: write local-container"),
        (
            "ec2",
            "unknown resource 'ec2': choose one of kubernetes, local-container, local-process,"
            " slurm",
        ),
        (["x"], "unknown resource ['x']"),
    ],
)
def test_a_resource_type_without_a_runner_gets_one_line_saying_what_it_is(
    name: Any, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 14 registered slurm and kubernetes: a planned runner is a made-up name now.
    monkeypatch.setitem(registry.NOT_IN_THIS_BUILD, "nomad", None)
    why = registry.problem(name)
    assert why is not None and message in why and "\n" not in why
    if name not in ("local", "ec2", ["x"]):
        assert why.endswith(f"(it runs: {', '.join(registry.names())})")
    with pytest.raises(LaunchctlError, match="^" + re.escape(why) + "$"):
        registry.find(name)


def test_a_registered_runner_is_accepted_where_the_name_was_refused(
    scratch_registry: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """How issue 14's runners join: a module registers its class; validation follows."""
    registry._TYPES.pop("slurm")  # as before slurm.py registered it (issue 14)
    monkeypatch.setitem(registry.NOT_IN_THIS_BUILD, "slurm", None)
    with pytest.raises(LaunchctlError, match="not available in this build"):
        queues.check_resource("slurm")

    class SlurmRunner:
        resource = "slurm"

    registry.register(options=frozenset({"partition", "env"}))(cast(Any, SlurmRunner))
    assert queues.check_resource("slurm") == "slurm"
    assert registry.get("slurm").__class__ is SlurmRunner
    queues.validate_config({"resource_args": {"slurm": {"partition": "gpu"}}}, "slurm")
    with pytest.raises(ConfigError, match=r"Unsupported resource_args.slurm option 'gres'"):
        queues.validate_config({"resource_args": {"slurm": {"gres": "gpu:1"}}}, "slurm")

    class FreeRunner:
        resource = "free-form"

    registry.register(options=None)(cast(Any, FreeRunner))  # the cluster checks its options
    queues.validate_config({"resource_args": {"free-form": {"anything": 1}}}, "free-form")


def test_register_refuses_a_bad_name_and_a_second_runner_for_one_name(
    scratch_registry: None,
) -> None:
    class Bad:
        resource = "Not A Name"

    with pytest.raises(ValueError, match="bad resource name"):
        registry.register(options=None)(cast(Any, Bad))

    class Other:
        resource = "local-process"

    with pytest.raises(ValueError, match="registered twice"):
        registry.register(options=None)(cast(Any, Other))
    # The same class again (a module imported twice) is no error.
    registry.register(options=local_process.OPTIONS)(local_process.LocalProcessRunner)


def test_a_runners_own_config_check_comes_from_the_registry(tmp_path: Path) -> None:
    """local-container's rule (no mount shows the store) is its own, applied by queues."""
    home = tmp_path / "home"
    config = {"resource_args": {"local-container": {"volume": [f"{home}:/x"]}}}
    with pytest.raises(ConfigError, match="would show the launchctl store"):
        queues.validate_config(config, "local-container")


# -- through the CLI: refused at once, nothing written ------------------------------------
@pytest.mark.parametrize("name", ["vertex", "sagemaker", "local"])
def test_queue_create_refuses_a_resource_without_a_runner(home: Path, name: str) -> None:
    cli("queue", "list", check=True)
    before = table_counts(home)
    proc = cli("queue", "create", "cluster", "--resource", name)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert f"resource '{name}'" in proc.stderr
    assert table_counts(home) == before


def test_resource_args_for_a_resource_without_a_runner_are_refused(home: Path) -> None:
    cli("queue", "list", check=True)
    before = table_counts(home)
    proc = cli("queue", "edit", "default", "--config", '{"resource_args": {"sagemaker": {}}}')
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert "queue config: resource 'sagemaker' is W&B Launch's Amazon SageMaker" in proc.stderr
    proc = cli("launch", "-q", "default", "-E", "true", "-R", '{"vertex": {"region": "x"}}')
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1
    assert "resource 'vertex' is W&B Launch's Google Vertex AI runner" in proc.stderr
    assert table_counts(home) == before


def test_launch_r_refuses_a_resource_without_a_runner(home: Path, tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "main.py").write_text("print('hi')\n")
    cli("queue", "list", check=True)
    before = table_counts(home)
    proc = cli("launch", "-u", str(code), "-E", "python main.py", "-r", "sagemaker")
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert "resource 'sagemaker' is W&B Launch's Amazon SageMaker runner" in proc.stderr
    assert table_counts(home) == before  # not even the code dir's job


# -- one error root -----------------------------------------------------------------------
def test_runner_errors_are_errors_of_the_one_root_with_their_stage() -> None:
    from launchctl.runners import RunnerError as FromRunners
    from launchctl.runners.base import RunnerError as FromBase

    assert FromRunners is RunnerError is FromBase is errors.RunnerError
    assert issubclass(RunnerError, LaunchctlError)
    assert RunnerError("x").stage == "run"
    assert stage_of(RunnerError("x", stage="build")) == "build"
    assert stage_of(ConfigError("x")) == "agent"


@pytest.mark.parametrize(
    ("raised", "stage", "reason"),
    [
        (RunnerError("the engine said no", stage="run"), "run", "the engine said no"),
        (RunnerError("base image missing", stage="build"), "build", "base image missing"),
        (ConfigError("a rule the agent enforces"), "agent", "a rule the agent enforces"),
        (KeyError("oops"), "agent", "internal error: KeyError: 'oops'"),
    ],
)
def test_the_agent_records_any_start_failure_at_its_stage(
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    raised: Exception,
    stage: str,
    reason: str,
) -> None:
    """The loop's one catch of the root: a RunnerError's stage, else agent; a bug is an
    internal error; the agent goes on. Raised where every start goes through (a worker's
    ``Starter.start`` and a start in the loop both prepare)."""

    def fail(self: Any, run: Any, **_kw: Any) -> Any:
        raise raised

    monkeypatch.setattr("launchctl.agent.loop.Starter.prepare", fail)
    (tmp_path / "main.py").write_text("print('hi')\n")
    request = LaunchRequest(queue="default", uri=str(tmp_path), entry_point="python main.py")
    run_id = submit(store, prepare_spec(request))["id"]
    agent = Agent(store, ["default"], AgentOptions(), say=lambda _line: None)
    agent.start()
    try:
        wait_for(
            lambda: (agent.run_once() or True) and store.runs.state(run_id) == "failed",
            what="the run to fail",
        )
    finally:
        agent.stop_all()
    run = store.runs.get(run_id)
    assert (run["stage"], run["reason"]) == (stage, reason)


# -- the agent's settings: one definition -------------------------------------------------
def test_agent_settings_default_to_the_one_definition() -> None:
    queue_names, options = load_agent_config(
        None, queues=["a,b", "a"], max_jobs=None, grace=None, poll=None, environ={}
    )
    assert queue_names == ["a", "b"]
    assert options == AgentOptions()


def test_agent_config_keys_set_the_options_and_entity_is_read() -> None:
    # The entity is read now, as W&B's agent reads it (issue 11): its queues must be its.
    config = (
        '{"queues": ["q"], "max_jobs": 3, "grace_s": 4, "poll_s": 0.5, "env": {"A": 1},'
        ' "registry": "127.0.0.1:5000", "builder": {"index_url": "http://x/simple"},'
        ' "entity": "vision"}'
    )
    queue_names, options = load_agent_config(
        config, queues=[], max_jobs=None, grace=2, poll=None, environ={}
    )
    assert queue_names == ["q"] and "entity" in AGENT_KEYS
    assert options == AgentOptions(
        max_jobs=3,
        grace_s=2.0,  # the flag over the file
        fallback_poll_s=0.5,
        env={"A": "1"},
        registry="127.0.0.1:5000",
        builder={"index_url": "http://x/simple"},
        entity="vision",
    )
