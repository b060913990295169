"""Every test gets its own LAUNCHCTL_HOME; helpers run the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from launchctl.store import Store
from tests.pkgindex import index  # noqa: F401 - the local package index fixture, for every test

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# The tests Ctrl-C the processes they start (`status --watch`, agents, `ui`). A suite started
# in the background of a shell without job control (`./scripts/test.sh &`) inherits SIGINT
# ignored, and so would every process it starts: they would never see the Ctrl-C. Handled
# here, SIGINT reaches the children at its default again (an exec keeps only "ignored").
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, real store per test, and a HOME of its own: an agent reads W&B's
    ``~/.config/wandb/launch-config.yaml`` when no ``-c`` is given, and W&B's variables
    (``WANDB_ENTITY``, ``WANDB_NAME``, ...) set where the suite runs would change runs."""
    path = tmp_path / "home"
    monkeypatch.setenv("LAUNCHCTL_HOME", str(path))
    monkeypatch.delenv("LAUNCHCTL_USER", raising=False)
    user_home = tmp_path / "user-home"
    user_home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(user_home))
    for name in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(name)
    for name in ("FORCE_COLOR", "CLICOLOR_FORCE", "NO_COLOR"):  # tests compare plain text
        monkeypatch.delenv(name, raising=False)
    return path


@pytest.fixture
def store(home: Path) -> Iterator[Store]:
    s = Store(home)
    yield s
    s.close()


def cli(
    *args: str,
    check: bool | None = None,
    input: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run `launchctl ARGS` as a user would, in its own process."""
    proc = subprocess.run(
        [sys.executable, "-m", "launchctl", *args],
        capture_output=True,
        text=True,
        input=input,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check:
        assert proc.returncode == 0, f"launchctl {' '.join(args)} failed:\n{proc.stderr}"
    return proc


def cli_json(*args: str) -> Any:
    return json.loads(cli(*args, "--json", check=True).stdout)


def wait_for(
    condition: Callable[[], Any],
    timeout: float = 30,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll until ``condition()`` is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class AgentProcess:
    """A real `launchctl agent` process, stopped (and reaped) at teardown."""

    def __init__(self, *args: str, log: Path) -> None:
        self.log = log
        self._fh = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "launchctl", "agent", *args],
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
        )

    def output(self) -> str:
        return self.log.read_text()

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        """Stop the agent as a user would: SIGTERM (drain), and a second one (stop the runs)
        once the first has been taken: two sent at once can arrive as one signal, and the
        agent would then drain, waiting for its runs, until the test gave up on it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    agents: list[AgentProcess] = []

    def start(*args: str) -> AgentProcess:
        agent = AgentProcess(*args, log=tmp_path / f"agent-{len(agents)}.log")
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.stop()


StartAgent = Callable[..., AgentProcess]


def git(*args: str, cwd: Path) -> str:
    """Run git in ``cwd`` with a throwaway identity; its output, stripped."""
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def make_script(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(body)
    return path


def table_counts(home: Path) -> dict[str, int]:
    """Row counts of every table: proof that a refused command wrote nothing."""
    import sqlite3

    db = home / "launchctl.db"
    if not db.exists():
        return {}
    conn = sqlite3.connect(db)
    try:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {n: conn.execute(f"SELECT COUNT(*) FROM [{n}]").fetchone()[0] for n in names}
    finally:
        conn.close()


# -- services ------------------------------------------------------------------------------
# A test that needs a service scripts/services.sh provides (the Docker engine, the base
# images, the registry, the Slurm cluster) skips when it is missing, with a reason that
# names scripts/services.sh. Under CI (CI=true) or LAUNCHCTL_REQUIRE_SERVICES=1 that skip is
# a failure instead: a suite cannot go green while proving nothing about containers.
SERVICES_SCRIPT = "scripts/services.sh"
REQUIRE_SERVICES_ENV = "LAUNCHCTL_REQUIRE_SERVICES"


def services_required() -> bool:
    """Whether a missing service fails the tests that need it (CI), rather than skips them."""
    ci = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")
    return ci or os.environ.get(REQUIRE_SERVICES_ENV, "").strip() == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """The one place a service's skip becomes a failure when services are required."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not (report.skipped and isinstance(report.longrepr, tuple) and services_required()):
        return
    reason = str(report.longrepr[2]).removeprefix("Skipped: ")
    if SERVICES_SCRIPT in reason:
        why = f"CI={os.environ.get('CI')}"
        if os.environ.get(REQUIRE_SERVICES_ENV, "").strip() == "1":
            why = f"{REQUIRE_SERVICES_ENV}=1"
        report.outcome = "failed"
        report.longrepr = f"a required service is missing ({why}): {reason}"


BUSYBOX = "launchctl-test/busybox:latest"
PYTHON_IMAGE = "launchctl-test/python:bookworm"


@pytest.fixture(scope="session")
def docker_client() -> Any:
    """The real local Docker engine; tests that need it skip, saying why, when none answers."""
    try:
        import docker

        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:  # any failure to reach the engine means: skip, with the reason
        pytest.skip(f"no Docker engine reachable ({exc}); run scripts/services.sh all")
    for image in (BUSYBOX, PYTHON_IMAGE):
        try:
            client.images.get(image)
        except Exception:
            pytest.skip(f"base image {image} is missing; run scripts/services.sh images")
    return client


@pytest.fixture
def docker(docker_client: Any, home: Path) -> Iterator[Any]:
    """The engine; the containers of this test's runs are removed after it (only those:
    other test sessions may share the engine)."""
    yield docker_client
    if not (home / "launchctl.db").exists():
        return
    store = Store(home)
    try:
        mine = {r["id"] for r in store.runs.select(limit=None)}
    finally:
        store.close()
    for container in docker_client.containers.list(all=True, filters={"label": "launchctl.run_id"}):
        if container.labels.get("launchctl.run_id") in mine or container.labels.get(
            "launchctl.run_id", ""
        ).endswith("test"):
            container.remove(force=True)
