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

import pytest

from launchctl.store.migrations import NAMES
from tests.conftest import (
    ROOT,
    AgentProcess,
    cli,
    cli_json,
    make_script,
    table_counts,
    wait_for,
)

StartAgent = Callable[..., AgentProcess]

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
