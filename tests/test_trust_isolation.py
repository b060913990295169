"""Issue 9, part C: what a run can reach, and file modes.

A run learns nothing of the store (no LAUNCHCTL_HOME, only its queue's secrets); a queue
can run its runs as another Unix user (run_as) that cannot read the store at all; no
container gets a mount that shows the store; the store is private (0700 / 0600) unless a
lab asks for a group mode; and the store is opened carefully: a newer schema, an empty
file and a read-only home each get one clear line.

Tests that need Unix permissions to mean something run the CLI as a real unprivileged user
(created with useradd when the suite runs as root; skipped, saying why, otherwise).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import sqlite3
import stat
import subprocess
import sysconfig
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from launchctl.store import Store
from launchctl.store.migrations import NAMES
from tests.conftest import (
    BUSYBOX,
    ROOT,
    StartAgent,
    cli,
    cli_json,
    make_script,
    table_counts,
    wait_for,
)

RUN_USER = "launchctl-run-test"
SYSTEM_PYTHON = "/usr/bin/python3"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    previous = os.umask(value)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The CLI starts from the user's umask: make it the usual 022 for every test here."""
    with umask(0o022):
        yield


@pytest.fixture(scope="session")
def run_user() -> pwd.struct_passwd:
    """A real unprivileged Unix user, made once (the suite runs as root here)."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to create a Unix user and start processes as it")
    if shutil.which("useradd") is None or shutil.which("runuser") is None:
        pytest.skip("needs useradd and runuser (util-linux) to act as another user")
    try:
        return pwd.getpwnam(RUN_USER)
    except KeyError:
        pass
    done = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", RUN_USER],
        capture_output=True,
        text=True,
    )
    if done.returncode not in (0, 9):  # 9: made meanwhile by another test session
        pytest.skip(f"useradd {RUN_USER} failed: {done.stderr.strip()}")
    return pwd.getpwnam(RUN_USER)


@pytest.fixture
def open_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A LAUNCHCTL_HOME under a folder other users may enter (pytest's tmp is root's 0700)."""
    base = Path(tempfile.mkdtemp(prefix="launchctl-trust-"))
    base.chmod(0o755)
    home = base / "home"
    monkeypatch.setenv("LAUNCHCTL_HOME", str(home))
    yield home
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def user_cli(run_user: pwd.struct_passwd) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`launchctl ARGS` as RUN_USER: the system Python with this checkout and its packages
    (the virtualenv's own interpreter lives under root's 0700 home)."""
    site = sysconfig.get_paths()["purelib"]
    base_env = {
        "PYTHONPATH": f"{ROOT}{os.pathsep}{site}",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",
        "LANG": "C.UTF-8",
    }

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        home = os.environ.get("LAUNCHCTL_HOME", "/nonexistent")
        full = {**base_env, "LAUNCHCTL_HOME": home, **(env or {})}
        return subprocess.run(
            ["runuser", "-u", RUN_USER, "--", "env", "-i"]
            + [f"{k}={v}" for k, v in full.items()]
            + [SYSTEM_PYTHON, "-m", "launchctl", *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd="/",
        )

    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"{SYSTEM_PYTHON} is needed to run launchctl as {RUN_USER}")
    probe = run("--version")
    if probe.returncode != 0:
        pytest.skip(f"launchctl does not start as {RUN_USER}: {probe.stderr.strip()[-200:]}")
    return run


def set_secret(name: str, value: str) -> None:
    proc = cli("secret", "set", name, input=value)
    assert proc.returncode == 0, proc.stderr


def new_value() -> str:
    return "sk-" + os.urandom(16).hex()


def launch(*args: str, env: dict[str, str] | None = None) -> str:
    proc = cli("launch", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


# -- finding 3: a run learns nothing of the store ------------------------------------

ENV_DUMP = """\
import json, os, sys
with open(sys.argv[1], "w") as fh:
    json.dump(dict(os.environ), fh)
print("dumped", flush=True)
"""


def test_a_run_does_not_get_launchctl_home_or_another_queues_secret(
    home: Path, tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine, theirs = new_value(), new_value()
    set_secret("mine", mine)
    set_secret("theirs", theirs)
    for name, secret in (("ours", "mine"), ("other", "theirs")):
        config = {"resource_args": {"local-process": {"env": {"API_KEY": {"secret": secret}}}}}
        cli("queue", "create", name, "--config", json.dumps(config), check=True)
    code = make_script(tmp_path / "job", "dump.py", ENV_DUMP).parent
    out = tmp_path / "env.json"
    # The agent's own settings are in its environment, as a service would have them.
    monkeypatch.setenv("LAUNCHCTL_USER", "root")
    monkeypatch.setenv("LAUNCHCTL_BUSY_TIMEOUT", "31")
    run_id = launch("-q", "ours", "-u", str(code), "-E", f"python dump.py {out}")
    cli("agent", "-q", "ours", "--burst", check=True)
    assert store.runs.state(run_id) == "finished", store.runs.get(run_id)["reason"]
    env = json.loads(out.read_text())
    assert env["API_KEY"] == mine  # its own queue's secret: yes
    assert env["LAUNCHCTL_RUN_ID"] == run_id
    assert "LAUNCHCTL_HOME" not in env
    assert sorted(k for k in env if k.startswith("LAUNCHCTL_")) == ["LAUNCHCTL_RUN_ID"]
    assert not [k for k, v in env.items() if str(home) in v and k != "PWD"]
    assert theirs not in json.dumps(env)  # another queue's secret: no


def test_a_secrets_file_where_older_stores_kept_it_is_moved_into_the_private_folder(
    home: Path,
) -> None:
    value = new_value()
    home.mkdir(mode=0o700)
    legacy = home / "secrets.json"
    fd = os.open(legacy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, json.dumps({"version": 1, "secrets": {"old-key": value}}).encode())
    os.close(fd)
    assert cli("secret", "list", check=True).stdout.split() == ["NAME", "old-key"]
    assert not legacy.exists()
    moved = home / "secrets" / "secrets.json"
    assert json.loads(moved.read_text())["secrets"] == {"old-key": value}
    assert (mode(home / "secrets"), mode(moved)) == (0o700, 0o600)


PROBE = """\
import os, sys
print("uid", os.getuid(), flush=True)
store = os.path.abspath(os.path.join("..", "..", ".."))  # its folder names the store
for name in ("launchctl.db", os.path.join("secrets", "secrets.json"), "secrets.json"):
    try:
        with open(os.path.join(store, name), "rb") as fh:
            fh.read(1)
        print(name, "READABLE", flush=True)
    except PermissionError:
        print(name, "PermissionError", flush=True)
    except FileNotFoundError:
        print(name, "missing", flush=True)
print("home in env:", "LAUNCHCTL_HOME" in os.environ, flush=True)
print("HOME", os.environ.get("HOME"), flush=True)
print("secret:", os.environ.get("API_KEY"), flush=True)
with open("made.txt", "w") as fh:
    fh.write("mine")
print("made", oct(os.stat("made.txt").st_mode & 0o777), flush=True)
sys.exit(3)
"""


def run_as_queue(name: str, user: str, env: dict[str, Any] | None = None) -> None:
    config: dict[str, Any] = {"run_as": user}
    if env:
        config["resource_args"] = {"local-process": {"env": env}}
    cli("queue", "create", name, "--config", json.dumps(config), check=True)


def test_a_run_as_run_runs_as_that_user_and_cannot_read_the_store_or_the_secrets(
    open_home: Path, tmp_path: Path, run_user: pwd.struct_passwd, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = new_value()
    set_secret("api-key", value)
    run_as_queue("lab", RUN_USER, {"API_KEY": {"secret": "api-key"}})
    open_home.chmod(0o711)  # the admin lets runs search the home (not list it)
    code = make_script(tmp_path / "job", "probe.py", PROBE).parent
    run_id = launch("-q", "lab", "-u", str(code), "-E", f"{SYSTEM_PYTHON} probe.py")
    monkeypatch.setenv("LAUNCHCTL_RUN_AS_USERS", f"someone,{RUN_USER}")
    cli("agent", "-q", "lab", "--burst", check=True)
    store = Store(open_home)
    try:
        run = store.runs.get(run_id)
    finally:
        store.close()
    assert (run["state"], run["exit_code"]) == ("failed", 3), run["reason"]
    log = cli("logs", run_id, check=True).stdout
    assert f"uid {run_user.pw_uid}\n" in log
    assert "launchctl.db PermissionError" in log
    assert "secrets/secrets.json PermissionError" in log
    assert "READABLE" not in log
    assert "home in env: False" in log
    assert "secret: ***" in log and value not in log  # its secret, masked in the log
    assert "made 0o644" in log  # its own files: the user's umask (022), not the store's
    made = Path(run["workdir"]) / "made.txt"
    assert made.stat().st_uid == run_user.pw_uid
    assert mode(open_home / "launchctl.db") == 0o600
    assert mode(Path(run["log_path"])) == 0o600
    assert Path(run["log_path"]).stat().st_uid == 0


def test_a_run_as_run_without_secrets_still_has_its_log_and_exit_code(
    open_home: Path, tmp_path: Path, run_user: pwd.struct_passwd, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_as_queue("lab", RUN_USER)
    open_home.chmod(0o711)
    code = make_script(tmp_path / "job", "probe.py", PROBE).parent
    run_id = launch("-q", "lab", "-u", str(code), "-E", f"{SYSTEM_PYTHON} probe.py")
    monkeypatch.setenv("LAUNCHCTL_RUN_AS_USERS", RUN_USER)
    cli("agent", "-q", "lab", "--burst", check=True)
    shown = cli_json("runs", "show", run_id)
    assert (shown["state"], shown["exit_code"]) == ("failed", 3), shown["reason"]
    log = cli("logs", run_id, check=True).stdout
    assert f"uid {run_user.pw_uid}\n" in log and "launchctl.db PermissionError" in log
    assert f"HOME {run_user.pw_dir}\n" in log  # its own HOME, not the agent's


def test_run_as_fails_at_stage_agent_unless_the_agents_operator_allows_that_user(
    open_home: Path, tmp_path: Path, run_user: pwd.struct_passwd, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_as_queue("lab", RUN_USER)
    open_home.chmod(0o711)
    code = make_script(tmp_path / "job", "probe.py", PROBE).parent
    run_id = launch("-q", "lab", "-u", str(code), "-E", f"{SYSTEM_PYTHON} probe.py")
    monkeypatch.delenv("LAUNCHCTL_RUN_AS_USERS", raising=False)
    cli("agent", "-q", "lab", "--burst", check=True)
    shown = cli_json("runs", "show", run_id)
    assert (shown["state"], shown["stage"]) == ("failed", "agent")
    assert "LAUNCHCTL_RUN_AS_USERS" in shown["reason"] and RUN_USER in shown["reason"]
    assert not (open_home / "runs" / run_id / "code").exists()  # nothing was laid out


def test_run_as_in_a_home_the_user_cannot_enter_fails_saying_what_to_change(
    open_home: Path, tmp_path: Path, run_user: pwd.struct_passwd, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_as_queue("lab", RUN_USER)
    assert mode(open_home) == 0o700  # as launchctl made it
    code = make_script(tmp_path / "job", "probe.py", PROBE).parent
    run_id = launch("-q", "lab", "-u", str(code), "-E", f"{SYSTEM_PYTHON} probe.py")
    monkeypatch.setenv("LAUNCHCTL_RUN_AS_USERS", RUN_USER)
    cli("agent", "-q", "lab", "--burst", check=True)
    shown = cli_json("runs", "show", run_id)
    assert (shown["state"], shown["stage"]) == ("failed", "agent")
    assert f"chmod o+x {open_home}" in shown["reason"]
    assert mode(open_home) == 0o700  # the admin's folder is not opened behind their back


def test_run_as_needs_an_agent_that_runs_as_root(
    open_home: Path, tmp_path: Path, user_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    # The whole store is the unprivileged user's: they create the queue and run the agent.
    open_home.parent.chmod(0o777)
    config = json.dumps({"run_as": RUN_USER})
    made = user_cli("queue", "create", "lab", "--config", config)
    assert made.returncode == 0, made.stderr
    code = make_script(open_home.parent / "job", "probe.py", PROBE).parent
    launched = user_cli("launch", "-q", "lab", "-u", str(code), "-E", "true")
    assert launched.returncode == 0, launched.stderr
    run_id = launched.stdout.strip()
    agent = user_cli("agent", "-q", "lab", "--burst", env={"LAUNCHCTL_RUN_AS_USERS": RUN_USER})
    assert agent.returncode == 0, agent.stderr
    shown = json.loads(user_cli("runs", "show", run_id, "--json").stdout)
    assert (shown["state"], shown["stage"]) == ("failed", "agent")
    assert "needs an agent that runs as root" in shown["reason"]


@pytest.mark.parametrize(
    ("resource", "user", "expected"),
    [
        ("local-process", "no-such-user-xyz", "no Unix user named 'no-such-user-xyz'"),
        ("local-process", "root", "is root"),
        ("local-process", "{{who}}", "without template fields or macros"),
        ("local-process", "${USER}", "without template fields or macros"),
        ("local-container", "nobody", "local-process queues only"),
    ],
)
def test_a_queue_run_as_must_be_an_existing_unprivileged_user_on_a_process_queue(
    home: Path, resource: str, user: str, expected: str
) -> None:
    Store(home).close()
    before = table_counts(home)
    config = json.dumps({"run_as": user})
    proc = cli("queue", "create", "q", "--resource", resource, "--config", config)
    assert proc.returncode == 1
    assert expected in one_line(proc.stderr)
    assert table_counts(home) == before


# -- finding 3: no container mount shows the store -----------------------------------


def test_a_container_queue_that_mounts_the_store_is_refused_when_written(
    home: Path, tmp_path: Path
) -> None:
    Store(home).close()
    link = tmp_path / "innocent"
    link.symlink_to(home)
    before = table_counts(home)
    for volume, cache in [
        (f"{home}:/data", None),  # the store's folder itself
        (f"{home}/runs:/data:ro", None),  # a folder inside it
        (f"{link}:/data", None),  # through a symbolic link
        (f"{tmp_path}/x/../home/secrets:/s", None),  # through ..
        ("/:/host", None),  # a folder that holds it
        ([f"{tmp_path}/data:/data", f"{home}/launchctl.db:/db"], None),  # one of a list
        (None, str(link)),  # the artifact cache
        (None, {"host_path": f"{home}/runs", "path": "/cache"}),
    ]:
        config: dict[str, Any] = {}
        if volume is not None:
            config["resource_args"] = {"local-container": {"volume": volume}}
        if cache is not None:
            config["artifact_cache"] = cache
        proc = cli(
            "queue", "create", "box", "-r", "local-container", "--config", json.dumps(config)
        )
        assert proc.returncode == 1, (volume, cache)
        assert "would show the launchctl store" in one_line(proc.stderr)
    assert table_counts(home) == before
    # A folder beside the store, or a named volume, is fine.
    ok = {"resource_args": {"local-container": {"volume": [f"{tmp_path}/data:/data", "cache:/c"]}}}
    cli("queue", "create", "box", "-r", "local-container", "--config", json.dumps(ok), check=True)


def test_a_volume_that_points_into_the_store_at_run_time_fails_at_stage_agent_without_a_container(
    home: Path, tmp_path: Path, store: Store, docker: Any
) -> None:
    elsewhere = tmp_path / "data"
    elsewhere.mkdir()
    link = tmp_path / "data-link"
    link.symlink_to(elsewhere)
    config = {"resource_args": {"local-container": {"volume": f"{link}:/data"}}}
    cli("queue", "create", "box", "-r", "local-container", "--config", json.dumps(config),
        check=True)  # fmt: skip
    link.unlink()
    link.symlink_to(home)  # repointed after the queue was written
    run_id = launch("-q", "box", "-d", BUSYBOX, "-E", "ls -R /data")
    cli("agent", "-q", "box", "--burst", check=True)
    run = store.runs.get(run_id)
    assert (run["state"], run["stage"]) == ("failed", "agent")
    assert "would show the launchctl store" in run["reason"]
    assert docker.containers.list(all=True, filters={"label": f"launchctl.run_id={run_id}"}) == []
    assert "launchctl.db" not in cli("logs", run_id).stdout


def test_a_direct_container_launch_cannot_mount_the_store(home: Path, store: Store) -> None:
    args = json.dumps({"local-container": {"volume": f"{home}:/data"}})
    proc = cli("launch", "-r", "local-container", "-d", BUSYBOX, "-R", args, "-E", "ls /data")
    assert proc.returncode != 0
    assert "would show the launchctl store" in proc.stderr
    assert "launchctl.db" not in proc.stdout


# -- finding 10: files are private by default ----------------------------------------

MAKER = """\
import os, sys, time
with open("made.txt", "w") as fh:
    fh.write("mine")
print("made", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.05)
"""


def test_a_new_store_its_database_and_a_run_log_are_private(
    home: Path, tmp_path: Path, start_agent: StartAgent
) -> None:
    code = make_script(tmp_path / "job", "maker.py", MAKER).parent
    go = tmp_path / "go"
    go.write_text("")
    proc = cli("launch", "-u", str(code), "-E", f"python maker.py {go}", "--json")
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    assert mode(home) == 0o700
    assert mode(home / "launchctl.db") == 0o600
    assert mode(home / "runs" / run["id"]) == 0o700
    assert mode(Path(run["log_path"])) == 0o600
    assert mode(home / "launchctl.db.migrate.lock") == 0o600
    # The run's own files get the user's umask (022 here), not the store's.
    assert mode(Path(run["workdir"]) / "made.txt") == 0o644
    # While an agent has the store open, its write-ahead log and shared memory are 0600.
    go.unlink()
    run_id = launch("-q", "default", "-u", str(code), "-E", f"python maker.py {go}")
    agent = start_agent("-q", "default")
    wal = home / "launchctl.db-wal"
    wait_for(lambda: cli_json("runs", "show", run_id)["state"] == "running", what="running")
    assert wal.exists() and (home / "launchctl.db-shm").exists()
    assert mode(wal) == 0o600 and mode(home / "launchctl.db-shm") == 0o600
    assert mode(home / "runs" / run_id / "output.log") == 0o600
    go.write_text("")
    wait_for(lambda: cli_json("runs", "show", run_id)["state"] == "finished", what="finished")
    agent.stop()


def test_a_lab_sharing_a_store_through_a_group_gets_group_modes(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAUNCHCTL_UMASK", "007")
    set_secret("k", new_value())
    code = make_script(tmp_path / "job", "maker.py", MAKER).parent
    go = tmp_path / "go"
    go.write_text("")
    proc = cli("launch", "-u", str(code), "-E", f"python maker.py {go}", "--json")
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    assert mode(home) == 0o770
    assert mode(home / "launchctl.db") == 0o660
    assert mode(home / "runs" / run["id"]) == 0o770
    assert mode(Path(run["log_path"])) == 0o660
    assert mode(Path(run["workdir"]) / "made.txt") == 0o644
    # Secrets stay their owner's alone, whatever the group mode.
    assert mode(home / "secrets") == 0o700
    assert mode(home / "secrets" / "secrets.json") == 0o600


def test_an_existing_home_keeps_the_mode_its_admin_gave_it(home: Path) -> None:
    home.mkdir(mode=0o750)
    home.chmod(0o750)
    cli("queue", "list", check=True)
    assert mode(home) == 0o750
    assert mode(home / "launchctl.db") == 0o600


@pytest.mark.parametrize("value", ["abc", "0777", "700", "8"])
def test_a_bad_umask_setting_is_one_line_and_creates_nothing(home: Path, value: str) -> None:
    proc = cli("queue", "list", env={"LAUNCHCTL_UMASK": value})
    assert proc.returncode == 1
    assert "LAUNCHCTL_UMASK" in one_line(proc.stderr)
    assert not home.exists()


# -- low items: opening the store ----------------------------------------------------


def test_a_store_written_by_a_newer_launchctl_is_refused_naming_both_schemas(
    home: Path,
) -> None:
    cli("queue", "create", "q", check=True)
    conn = sqlite3.connect(home / "launchctl.db")
    with conn:
        conn.execute(
            "INSERT INTO _sqlite_migrations (migration_set, name, applied_at)"
            " VALUES ('launchctl', 'm999_from_the_future', '2099-01-01')"
        )
        conn.execute("ALTER TABLE queues ADD COLUMN future TEXT NOT NULL DEFAULT 'x'")
    conn.close()
    for args in (["queue", "list"], ["queue", "create", "r"]):
        proc = cli(*args)
        assert proc.returncode == 1
        line = one_line(proc.stderr)
        assert "m999_from_the_future" in line and NAMES[-1] in line
        assert "upgrade launchctl" in line


def test_an_empty_database_file_is_refused_not_taken_for_a_new_store(home: Path) -> None:
    home.mkdir(mode=0o700)
    (home / "launchctl.db").touch()
    proc = cli("queue", "list")
    assert proc.returncode == 1
    assert "empty (0 bytes)" in one_line(proc.stderr)
    assert (home / "launchctl.db").stat().st_size == 0
    assert not (home / "launchctl.db-wal").exists()


def make_store_as_user(
    user_cli: Callable[..., subprocess.CompletedProcess[str]], code: Path
) -> str:
    """A store that RUN_USER owns: a queue, a code job, a queued run; returns the run id."""
    for args in (
        ["queue", "create", "q"],
        ["job", "create", "code", str(code), "-E", "python run.py", "-n", "hello"],
    ):
        done = user_cli(*args)
        assert done.returncode == 0, done.stderr
    done = user_cli("launch", "-q", "q", "-j", "hello")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("read_only", ["home", "file"])
def test_a_read_only_store_still_lists_and_refuses_writes_in_one_line(
    open_home: Path,
    tmp_path: Path,
    user_cli: Callable[..., subprocess.CompletedProcess[str]],
    read_only: str,
) -> None:
    open_home.parent.chmod(0o777)
    code = make_script(open_home.parent / "job", "run.py", "print('hi')").parent
    run_id = make_store_as_user(user_cli, code)
    assert not (open_home / "launchctl.db-wal").exists()  # the last writer cleaned up
    if read_only == "home":
        open_home.chmod(0o555)
    else:
        (open_home / "launchctl.db").chmod(0o444)
    for args, expected in [
        (["runs", "list"], run_id),
        (["queue", "list"], "default"),
        (["job", "list"], "hello"),
        (["runs", "show", run_id], run_id),
    ]:
        done = user_cli(*args)
        assert done.returncode == 0, (args, done.stderr)
        assert expected in done.stdout
    before = table_counts(open_home)
    done = user_cli("queue", "create", "r")
    assert done.returncode == 1
    assert "read-only" in one_line(done.stderr)
    assert table_counts(open_home) == before
