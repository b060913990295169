"""Secrets in runs: a queue's env refers to them, the agent injects them at run start, and a
value reaches the run but never the database, the JSON output, the events or the log."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from launchctl.agent.starter import masked_errors
from launchctl.errors import LaunchctlError
from launchctl.queues import queue_secret_refs
from launchctl.runners import Launch, RunnerError
from launchctl.runners.local_container import container_options
from launchctl.runners.local_process import LocalProcessRunner
from launchctl.store import Store
from tests.conftest import (
    BUSYBOX,
    StartAgent,
    cli,
    cli_json,
    make_script,
    table_counts,
    wait_for,
)

# Prints the secret whole, in two writes with a pause between (a value split across
# chunks), on stderr, and a lot of other output around it; then writes it to a file, so
# the test can tell that the run really got it.
PRINTER = """\
import os, sys, time
value = os.environ["API_KEY"]
print("key:", value, flush=True)
sys.stdout.write("split:" + value[:7]); sys.stdout.flush(); time.sleep(0.3)
sys.stdout.write(value[7:] + "\\n"); sys.stdout.flush()
print("err:", value, file=sys.stderr, flush=True)
for i in range(2000):
    print(f"line {i} {value} " + "x" * 50)
with open(sys.argv[1], "w") as fh:
    fh.write(value)
print("last line", flush=True)
sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
"""


def new_value() -> str:
    return "sk-" + os.urandom(20).hex()


def set_secret(name: str, value: str) -> None:
    proc = cli("secret", "set", name, input=value)
    assert proc.returncode == 0, proc.stderr
    assert value not in proc.stdout + proc.stderr


def secret_queue(name: str, resource: str, env: dict[str, Any], **options: Any) -> None:
    config = {"resource_args": {resource: {"env": env, **options}}}
    cli("queue", "create", name, "--resource", resource, "--config", json.dumps(config),
        check=True)  # fmt: skip


def launch(*args: str) -> str:
    proc = cli("launch", *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def raw_database(home: Path) -> bytes:
    """Every byte of the database, its write-ahead log and journal: what is stored."""
    data = b""
    for suffix in ("", "-wal", "-journal", "-shm"):
        path = home / f"launchctl.db{suffix}"
        if path.exists():
            data += path.read_bytes()
    assert data, "no database file"
    return data


def assert_nowhere(value: str, home: Path, run_id: str) -> dict[str, Any]:
    """``value`` is in no output of the CLI about the run, nor in the stored bytes."""
    shown = cli_json("runs", "show", run_id)
    outputs = [
        json.dumps(shown),
        json.dumps(cli_json("runs", "list")),
        cli("runs", "show", run_id, check=True).stdout,
        cli("runs", "list", check=True).stdout,
        cli("logs", run_id, check=True).stdout,
        cli("queue", "show", "secure", "--json").stdout,
    ]
    for text in outputs:
        assert value not in text
    encoded = value.encode()
    assert encoded not in raw_database(home)
    log = home / "runs" / run_id / "output.log"
    assert not log.exists() or encoded not in log.read_bytes()
    return dict(shown)


# -- local-process ------------------------------------------------------------------


def test_a_secret_reaches_a_process_run_but_not_the_store_the_json_or_the_log(
    home: Path, tmp_path: Path
) -> None:
    value = new_value()
    set_secret("api-key", value)
    secret_queue("secure", "local-process", {"API_KEY": {"secret": "api-key"}, "PLAIN": "p"})
    code = make_script(tmp_path / "job", "run.py", PRINTER).parent
    out = tmp_path / "seen.txt"
    run_id = launch("-q", "secure", "-u", str(code), "-E", f"python run.py {out}")
    cli("agent", "-q", "secure", "--burst", check=True)

    assert out.read_text() == value  # the run got the real value
    log = cli("logs", run_id, check=True).stdout
    assert "key: ***\n" in log and "split:***\n" in log and "err: ***\n" in log
    assert log.count("***") == 2003
    assert log.endswith("last line\n")  # complete before the end was recorded
    shown = assert_nowhere(value, home, run_id)
    assert (shown["state"], shown["exit_code"]) == ("finished", 0)


def test_a_masked_run_keeps_its_exit_status_and_its_whole_log(home: Path, tmp_path: Path) -> None:
    value = new_value()
    set_secret("api-key", value)
    secret_queue("secure", "local-process", {"API_KEY": {"secret": "api-key"}})
    code = make_script(tmp_path / "job", "run.py", PRINTER).parent
    run_id = launch("-q", "secure", "-u", str(code), "-E", f"python run.py {tmp_path}/x 3")
    cli("agent", "-q", "secure", "--burst", check=True)
    shown = assert_nowhere(value, home, run_id)
    assert (shown["state"], shown["stage"], shown["exit_code"]) == ("failed", "run", 3)
    assert shown["reason"] == "exit code 3"
    assert cli("logs", run_id, check=True).stdout.endswith("last line\n")


def test_launch_wait_streams_the_masked_log(
    home: Path, tmp_path: Path, start_agent: StartAgent
) -> None:
    value = new_value()
    set_secret("api-key", value)
    secret_queue("secure", "local-process", {"API_KEY": {"secret": "api-key"}})
    code = make_script(tmp_path / "job", "run.py", PRINTER).parent
    start_agent("-q", "secure")
    proc = cli("launch", "-q", "secure", "-u", str(code), "-E", f"python run.py {tmp_path}/x",
               "--wait", timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "key: ***" in proc.stdout and proc.stdout.endswith("last line\n")
    assert value not in proc.stdout + proc.stderr
    assert value.encode() not in raw_database(home)


def test_cancelling_a_masked_run_stops_it(
    home: Path, tmp_path: Path, start_agent: StartAgent
) -> None:
    value = new_value()
    set_secret("api-key", value)
    secret_queue("secure", "local-process", {"API_KEY": {"secret": "api-key"}})
    script = 'import os, time\nprint(os.environ["API_KEY"], flush=True)\ntime.sleep(120)\n'
    code = make_script(tmp_path / "job", "run.py", script).parent
    run_id = launch("-q", "secure", "-u", str(code), "-E", "python run.py")
    start_agent("-q", "secure")
    log = home / "runs" / run_id / "output.log"
    wait_for(lambda: log.exists() and b"***" in log.read_bytes(), what="the masked line")
    cli("runs", "cancel", run_id, check=True)
    wait_for(lambda: cli_json("runs", "show", run_id)["state"] == "stopped", what="stopped")
    assert log.read_bytes() == b"***\n"
    assert_nowhere(value, home, run_id)


def test_a_masked_run_goes_on_logging_when_its_agent_dies(
    home: Path, tmp_path: Path, start_agent: StartAgent
) -> None:
    """The copier is a process of its own: the agent's death neither stops nor unmasks it."""
    value = new_value()
    set_secret("api-key", value)
    secret_queue("secure", "local-process", {"API_KEY": {"secret": "api-key"}})
    go = tmp_path / "go"
    script = f"""\
import os, pathlib, time
value = os.environ["API_KEY"]
print("before", value, flush=True)
deadline = time.monotonic() + 60  # never outlives the test for long
while not pathlib.Path({str(go)!r}).exists() and time.monotonic() < deadline:
    time.sleep(0.05)
print("after", value, flush=True)
pathlib.Path({str(tmp_path / "done")!r}).write_text(value)
"""
    code = make_script(tmp_path / "job", "run.py", script).parent
    run_id = launch("-q", "secure", "-u", str(code), "-E", "python run.py")
    agent = start_agent("-q", "secure")
    log = home / "runs" / run_id / "output.log"
    # (The masker holds back the newline: fewer bytes than a value may still begin one.)
    wait_for(lambda: log.exists() and log.read_bytes().startswith(b"before ***"), what="line 1")
    agent.signal(signal.SIGKILL)
    agent.wait()
    go.touch()
    wait_for(lambda: (tmp_path / "done").exists(), what="the run to go on")
    wait_for(lambda: log.read_bytes() == b"before ***\nafter ***\n", what="the second line")


def test_a_missing_secret_fails_the_run_at_the_agent_naming_it(
    home: Path, tmp_path: Path, store: Store
) -> None:
    value = new_value()
    set_secret("present", value)
    env = {"A": {"secret": "present"}, "B": {"secret": "absent-key"}}
    secret_queue("secure", "local-process", env)
    code = make_script(tmp_path / "job", "run.py", PRINTER).parent
    run_id = launch("-q", "secure", "-u", str(code), "-E", f"python run.py {tmp_path}/x")
    proc = cli("agent", "-q", "secure", "--burst", check=True)
    run = store.runs.get(run_id)
    assert (run["state"], run["stage"]) == ("failed", "agent")
    assert "secret 'absent-key' is not set" in run["reason"]
    assert "absent-key" in proc.stdout + proc.stderr
    assert "running" not in [e["to_state"] for e in store.runs.events(run_id)]
    assert not (tmp_path / "x").exists()  # nothing ran
    assert_nowhere(value, home, run_id)


def test_an_unsafe_secrets_file_fails_the_run_at_the_agent(
    home: Path, tmp_path: Path, store: Store
) -> None:
    value = new_value()
    set_secret("api-key", value)
    secret_queue("secure", "local-process", {"API_KEY": {"secret": "api-key"}})
    (home / "secrets" / "secrets.json").chmod(0o644)
    code = make_script(tmp_path / "job", "run.py", PRINTER).parent
    run_id = launch("-q", "secure", "-u", str(code), "-E", f"python run.py {tmp_path}/x")
    cli("agent", "-q", "secure", "--burst", check=True)
    run = store.runs.get(run_id)
    assert (run["state"], run["stage"]) == ("failed", "agent")
    assert "chmod 600" in run["reason"]
    assert_nowhere(value, home, run_id)


def test_a_queue_without_secrets_never_reads_the_secrets_file(
    home: Path, tmp_path: Path, store: Store
) -> None:
    set_secret("api-key", new_value())
    (home / "secrets" / "secrets.json").chmod(0o644)  # unsafe, but nobody asks for it
    secret_queue("secure", "local-process", {"PLAIN": "yes"})
    code = make_script(tmp_path / "job", "run.py", "import os; print(os.environ['PLAIN'])").parent
    run_id = launch("-q", "secure", "-u", str(code), "-E", "python run.py")
    cli("agent", "-q", "secure", "--burst", check=True)
    assert store.runs.state(run_id) == "finished"
    assert cli("logs", run_id, check=True).stdout == "yes\n"


def test_a_hand_edited_run_that_refers_to_a_secret_is_refused(
    home: Path, tmp_path: Path, store: Store
) -> None:
    value = new_value()
    set_secret("api-key", value)
    cli("queue", "create", "secure", "--resource", "local-process", check=True)
    code = make_script(tmp_path / "job", "run.py", PRINTER).parent
    resource_args = json.dumps({"local-process": {"env": {"API_KEY": "plain"}}})
    run_id = launch("-q", "secure", "-u", str(code), "-E", f"python run.py {tmp_path}/x",
                    "-R", resource_args)  # fmt: skip
    conn = sqlite3.connect(home / "launchctl.db")
    spec = json.loads(conn.execute("SELECT spec FROM runs WHERE id = ?", [run_id]).fetchone()[0])
    spec["resource_args"]["local-process"]["env"]["API_KEY"] = {"secret": "api-key"}
    conn.execute("UPDATE runs SET spec = ? WHERE id = ?", [json.dumps(spec), run_id])
    conn.commit()
    conn.close()
    cli("agent", "-q", "secure", "--burst", check=True)
    run = store.runs.get(run_id)
    assert (run["state"], run["stage"]) == ("failed", "agent")
    assert "only a queue's config may refer to secrets" in run["reason"]
    assert "API_KEY" in run["reason"]
    assert not (tmp_path / "x").exists()
    assert value.encode() not in raw_database(home)


# -- local-container ----------------------------------------------------------------


def test_a_secret_reaches_a_container_but_not_the_store_the_json_or_the_log(
    docker: Any, home: Path, tmp_path: Path
) -> None:
    value = new_value()
    set_secret("api-key", value)
    out = tmp_path / "out"
    out.mkdir()
    secret_queue("secure", "local-container", {"KEY": {"secret": "api-key"}, "PLAIN": "p"},
                 volume=f"{out}:/out")  # fmt: skip
    run_id = launch("-q", "secure", "-d", BUSYBOX, "-E",
                    "sh -c 'echo $KEY $PLAIN; echo $KEY >&2; echo $KEY > /out/k'")  # fmt: skip
    cli("agent", "-q", "secure", "--burst", check=True)
    assert (out / "k").read_text() == value + "\n"
    log = cli("logs", run_id, check=True).stdout
    assert sorted(log.splitlines()) == ["***", "*** p"]
    shown = assert_nowhere(value, home, run_id)
    assert (shown["state"], shown["exit_code"]) == ("finished", 0)


def test_a_missing_secret_fails_a_container_run_before_it_starts(
    docker: Any, home: Path, store: Store
) -> None:
    secret_queue("secure", "local-container", {"KEY": {"secret": "absent-key"}})
    run_id = launch("-q", "secure", "-d", BUSYBOX, "-E", "echo hi")
    cli("agent", "-q", "secure", "--burst", check=True)
    run = store.runs.get(run_id)
    assert (run["state"], run["stage"]) == ("failed", "agent")
    assert "secret 'absent-key' is not set" in run["reason"]
    assert docker.containers.list(all=True, filters={"label": f"launchctl.run_id={run_id}"}) == []


# -- where references may be written ------------------------------------------------

MALFORMED = [
    {"secret": "not a name"},
    {"secret": 3},
    {"secret": "api-key", "default": "sk-pasted-by-mistake"},
    {"value": "sk-pasted-by-mistake"},
    {},
]


@pytest.mark.parametrize("resource", ["local-process", "local-container"])
@pytest.mark.parametrize("ref", MALFORMED)
def test_a_malformed_reference_is_refused_at_queue_create_in_one_line(
    home: Path, resource: str, ref: dict[str, Any]
) -> None:
    cli("queue", "create", "other", "--resource", resource, check=True)
    before = table_counts(home)
    config = json.dumps({"resource_args": {resource: {"env": {"API_KEY": ref}}}})
    for args in (
        ["queue", "create", "secure", "--resource", resource, "--config", config],
        ["queue", "edit", "other", "--config", config],
    ):
        proc = cli(*args)
        assert proc.returncode != 0
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert f"resource_args.{resource}.env" in lines[0] and "'API_KEY'" in lines[0]
        assert '{"secret": "NAME"}' in lines[0]
        assert "sk-pasted-by-mistake" not in proc.stderr  # a malformed ref is never quoted
    assert table_counts(home) == before
    assert cli_json("queue", "show", "other")["config"] == {}


def test_a_run_cannot_refer_to_a_secret_itself(home: Path, tmp_path: Path) -> None:
    set_secret("api-key", new_value())
    cli("queue", "create", "secure", "--resource", "local-process", check=True)
    before = table_counts(home)
    code = make_script(tmp_path / "job", "run.py", "print(1)").parent
    for resource in ("local-process", "local-container"):
        ref = json.dumps({resource: {"env": {"API_KEY": {"secret": "api-key"}}}})
        for where in (["-q", "secure"], ["-r", resource]):
            proc = cli("launch", *where, "-u", str(code), "-E", "python run.py", "-R", ref)
            assert proc.returncode != 0
            line = proc.stderr.strip()
            assert len(line.splitlines()) == 1, proc.stderr
            assert "only a queue's config may" in line
    assert table_counts(home) == before


def test_secret_references_only_go_in_env_not_in_e(home: Path) -> None:
    config = {"resource_args": {"local-container": {"e": {"K": {"secret": "api-key"}}}}}
    proc = cli("queue", "create", "box", "--resource", "local-container",
               "--config", json.dumps(config))  # fmt: skip
    assert proc.returncode != 0
    assert "resource_args.local-container.e: 'K' refers to a secret" in proc.stderr
    assert "in resource_args.<resource>.env" in proc.stderr
    assert "box" not in [q["name"] for q in cli_json("queue", "list")]


def test_queue_secret_refs_lists_the_names() -> None:
    config = {
        "resource_args": {
            "local-process": {"env": {"A": {"secret": "a"}, "B": "plain", "C": {"secret": "a"}}},
            "local-container": {"env": ["X=1"]},
        }
    }
    assert queue_secret_refs(config) == ["a"]
    assert queue_secret_refs({}) == []


# -- the pieces -----------------------------------------------------------------------


def test_launch_repr_holds_no_env_or_secret(tmp_path: Path) -> None:
    value = new_value()
    launch = Launch(run={"id": "x"}, entrypoint=["true"], args=[], env={"K": value},
                    workdir=tmp_path, log_path=tmp_path / "l", secrets=[value])  # fmt: skip
    assert value not in repr(launch)


def test_container_options_take_secret_values_from_the_launch_env(tmp_path: Path) -> None:
    value = new_value()
    launch = Launch(run={"id": "x"}, entrypoint=[], args=[], env={"K": value, "P": "1"},
                    workdir=tmp_path, log_path=tmp_path / "l", image="img",
                    resource_args={"env": {"K": {"secret": "k"}, "P": "2"}},
                    secrets=[value])  # fmt: skip
    assert container_options(launch)["environment"] == {"K": value, "P": "2"}


def test_output_without_secrets_reaches_the_log_unchanged(tmp_path: Path) -> None:
    # Through the copier too (it is what sees a full disk), with nothing to mask.
    launch = Launch(run={"id": "x"}, entrypoint=["echo", "hi"], args=[], env=dict(os.environ),
                    workdir=tmp_path, log_path=tmp_path / "l")  # fmt: skip
    handle = LocalProcessRunner().start(launch)
    exit_ = wait_for(handle.poll, what="the exit")
    assert exit_.code == 0 and (tmp_path / "l").read_text() == "hi\n"


def test_a_process_exit_is_reported_only_once_the_log_is_complete(tmp_path: Path) -> None:
    value = new_value()
    # Far more than a pipe holds: the copier is still busy when the process has exited.
    script = f"import sys; [print('{value}', 'y' * 200) for _ in range(20000)]; sys.exit(4)"
    launch = Launch(run={"id": "x"}, entrypoint=[sys.executable, "-c", script], args=[],
                    env=dict(os.environ), workdir=tmp_path, log_path=tmp_path / "l",
                    secrets=[value])  # fmt: skip
    handle = LocalProcessRunner().start(launch)
    exit_ = wait_for(handle.poll, interval=0.001, what="the exit")
    assert exit_.code == 4
    log = (tmp_path / "l").read_bytes()
    assert log == (b"*** " + b"y" * 200 + b"\n") * 20000


def test_errors_after_the_secrets_are_read_are_masked() -> None:
    value = new_value()
    values: list[str] = []
    with pytest.raises(RunnerError) as info, masked_errors(values):
        values.append(value)
        raise RunnerError(f"could not create the container: bad env {value}", stage="run")
    assert str(info.value) == "could not create the container: bad env ***"
    assert info.value.stage == "run"
    for exc in (LaunchctlError(f"x {value}"), ValueError(f"y {value}")):
        with pytest.raises(RunnerError) as info, masked_errors([value]):
            raise exc
        assert value not in str(info.value) and info.value.stage == "agent"
    with pytest.raises(ValueError, match="untouched"), masked_errors([]):
        raise ValueError("untouched")
