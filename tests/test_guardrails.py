"""Resource guardrails: asks, queue ceilings, and limits each runner applies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from launchctl import guardrails
from launchctl.errors import ConfigError, LaunchctlError
from launchctl.store import Store
from tests.conftest import BUSYBOX, EXAMPLES, cli, make_script

HELLO = str(EXAMPLES / "hello")


@pytest.mark.parametrize(
    ("value", "size"), [("512m", 512 << 20), ("4g", 4 << 30), ("1.5g", int(1.5 * (1 << 30))),
                        (1024, 1024), ("2GiB", 2 << 30), ("64k", 64 << 10)],
)  # fmt: skip
def test_memory_sizes(value: Any, size: int) -> None:
    assert guardrails.parse_memory(value) == size


@pytest.mark.parametrize(
    ("value", "secs"), [(90, 90.0), ("90s", 90.0), ("30m", 1800.0), ("2h", 7200.0)]
)
def test_durations(value: Any, secs: float) -> None:
    assert guardrails.parse_duration(value) == secs


@pytest.mark.parametrize("bad", ["", "lots", "-1", "0", "5x"])
def test_bad_sizes_and_durations_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError):
        guardrails.parse_memory(bad)
    with pytest.raises(ConfigError):
        guardrails.parse_duration(bad)


def test_a_ceiling_refuses_bigger_asks_and_caps_runs_that_ask_nothing() -> None:
    ceilings = {"cpus": 2, "memory": "1g", "gpus": 2, "max_run_time": "1h"}
    capped = guardrails.apply_ceilings("q", ceilings, guardrails.Limits())
    assert (capped.cpus, capped.memory, capped.max_run_time) == (2.0, 1 << 30, 3600.0)
    ok = guardrails.apply_ceilings("q", ceilings, guardrails.asks({"cpus": 1, "gpus": "device=0"}))
    assert ok.cpus == 1.0
    for asks, what in [({"cpus": 4}, "cpus 4"), ({"memory": "2g"}, "memory 2g"),
                       ({"gpus": "all"}, "gpus all"), ({"gpus": 3}, "gpus 3"),
                       ({"max_run_time": "2h"}, "max_run_time 7200s")]:  # fmt: skip
        with pytest.raises(LaunchctlError, match=f"asks for {what}, above queue q's ceiling"):
            guardrails.apply_ceilings("q", ceilings, guardrails.asks(asks))


def test_launch_above_a_ceiling_is_refused_with_nothing_written(home: Path) -> None:
    from tests.conftest import table_counts

    config = {"ceilings": {"cpus": 2, "memory": "1g"}}
    cli("queue", "create", "small", "--config", json.dumps(config), check=True)
    before = table_counts(home)
    proc = cli("launch", "-q", "small", "-u", HELLO, "-E", "python train.py",
               "-R", '{"local-process": {"cpus": 8}}')  # fmt: skip
    assert proc.returncode == 1
    assert "the run asks for cpus 8, above queue small's ceiling of 2" in proc.stderr
    assert table_counts(home) == before


def test_a_templated_ceiling_field_is_checked_with_its_value() -> None:
    config = {
        "resource_args": {"local-process": {"cpus": "{{cpus}}"}},
        "ceilings": {"cpus": 4},
        "template_variables": {
            "cpus": {"type": "number", "minimum": 1, "maximum": 16, "default": 1}
        },
    }
    cli("queue", "create", "t", "--config", json.dumps(config), check=True)
    proc = cli("launch", "-q", "t", "-u", HELLO, "-E", "python train.py", "-v", "cpus=8")
    assert proc.returncode == 1 and "above queue t's ceiling of 4" in proc.stderr
    assert (
        cli("launch", "-q", "t", "-u", HELLO, "-E", "python train.py", "-v", "cpus=3").returncode
        == 0
    )


def test_a_process_past_its_run_time_fails_with_reason_timeout(
    store: Store, tmp_path: Path
) -> None:
    code = make_script(
        tmp_path / "slow", "main.py", "import time\nprint('start', flush=True)\ntime.sleep(300)\n"
    )
    cli("queue", "create", "timed", "--config",
        '{"resource_args": {"local-process": {"max_run_time": 1}}}', check=True)  # fmt: skip
    run_id = cli("launch", "-q", "timed", "-u", str(code.parent), "-E", "python main.py",
                 check=True).stdout.strip()  # fmt: skip
    proc = cli("agent", "-q", "timed", "--burst", "--grace", "1", timeout=60)
    assert proc.returncode == 0
    run = store.runs.get(run_id)
    assert (run["state"], run["stage"], run["reason"]) == ("failed", "run", "timeout")
    assert run["ended_at"] - run["started_at"] < 30


def test_a_queue_ceiling_run_time_applies_to_runs_that_ask_nothing(
    store: Store, tmp_path: Path
) -> None:
    code = make_script(tmp_path / "slow", "main.py", "import time\ntime.sleep(300)\n")
    cli("queue", "create", "capped", "--config", '{"ceilings": {"max_run_time": "1s"}}', check=True)
    run_id = cli("launch", "-q", "capped", "-u", str(code.parent), "-E", "python main.py",
                 check=True).stdout.strip()  # fmt: skip
    cli("agent", "-q", "capped", "--burst", "--grace", "1", check=True, timeout=60)
    assert store.runs.get(run_id)["reason"] == "timeout"


def test_a_process_memory_limit_is_an_address_space_ulimit(store: Store, tmp_path: Path) -> None:
    code = make_script(
        tmp_path / "mem", "main.py",
        "import resource\nsoft, hard = resource.getrlimit(resource.RLIMIT_AS)\nprint(soft)\n"
        "try:\n    blob = bytearray(600 * 1024 * 1024)\n    print('allocated')\n"
        "except MemoryError:\n    print('refused')\n",
    )  # fmt: skip
    proc = cli("launch", "-u", str(code.parent), "-E", "python main.py",
               "-R", '{"local-process": {"memory": "400m", "cpus": 1}}')  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    limit, outcome = proc.stdout.split()
    assert int(limit) == 400 * 1024 * 1024
    assert outcome == "refused"


def test_a_container_gets_its_limits_as_cgroup_settings(docker: Any, store: Store) -> None:
    config = {"ceilings": {"memory": "128m", "cpus": 1}}
    cli(
        "queue",
        "create",
        "box",
        "-r",
        "local-container",
        "--config",
        json.dumps(config),
        check=True,
    )
    run_id = cli("launch", "-q", "box", "-d", BUSYBOX, "-E", "sleep 30", check=True).stdout.strip()
    from tests.conftest import AgentProcess, wait_for

    agent = AgentProcess("-q", "box", "--grace", "1", log=store.root.parent / "agent.log")
    try:
        label = {"label": f"launchctl.run_id={run_id}"}
        container = wait_for(lambda: docker.containers.list(filters=label), what="container")[0]
        host = docker.api.inspect_container(container.id)["HostConfig"]
        assert host["Memory"] == 128 * 1024 * 1024
        assert host["NanoCpus"] == 1_000_000_000
    finally:
        cli("runs", "cancel", run_id)
        agent.stop()
