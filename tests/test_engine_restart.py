"""The Docker engine stops and starts in the middle of a run: the agent survives it.

The engine that restarts is the test's own: a ``dockerd`` it starts with its own data root,
exec root, pidfile, socket and network namespace (no bridge, no iptables rules), stops by
the pid it started and starts again. The test's launchctl and agent talk to it through
``DOCKER_HOST``. The machine's engine (and anyone's containers on it) is never signalled:
it only lends the busybox image, copied into the private engine with save/load.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from launchctl.store import Store
from tests.conftest import BUSYBOX, EXAMPLES, AgentProcess, cli, cli_json, wait_for


class PrivateEngine:
    """A dockerd of the test's own, followed by the pid it was started with."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "docker.sock"
        self.pidfile = root / "dockerd.pid"
        self.log = root / "dockerd.log"
        self.url = f"unix://{self.socket}"
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        # Its own network namespace too: a dockerd started with --bridge none deletes the
        # interface named docker0 (moby's removeDefaultBridgeInterface), which in the
        # machine's namespace would be the machine's engine's bridge. unshare execs dockerd,
        # so the pid started is still dockerd's.
        return [
            str(shutil.which("unshare")), "--net", "--",
            str(shutil.which("dockerd")),
            "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "exec"),
            "--pidfile", str(self.pidfile),
            "-H", self.url,
            "--bridge", "none",
            "--iptables=false", "--ip6tables=false", "--ip-masq=false",
            "--containerd-namespace", "launchctl-test",
            "--containerd-plugins-namespace", "launchctl-test-plugins",
        ]  # fmt: skip

    def client(self) -> Any:
        import docker

        return docker.DockerClient(base_url=self.url, timeout=60)

    def up(self) -> bool:
        try:
            client = self.client()
        except Exception:
            return False
        try:
            return bool(client.ping())
        except Exception:
            return False
        finally:
            client.close()

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        wait_for(lambda: self.up() or self.proc.poll() is not None, timeout=90,  # type: ignore[union-attr]
                 what="the test's own dockerd to answer")  # fmt: skip
        if not self.up():
            tail = self.log.read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"the test's own dockerd exited: {' | '.join(tail)}")
        # The pid it wrote is the one this test started: the only process it signals.
        assert int(self.pidfile.read_text().strip()) == self.proc.pid  # type: ignore[union-attr]

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM to the pid this test started (its containers stop with it); wait for it."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def own_engine(docker_client: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateEngine]:
    """A private engine holding the busybox image; DOCKER_HOST points at it for the test."""
    if shutil.which("dockerd") is None or shutil.which("unshare") is None:
        pytest.skip("dockerd or unshare is not installed: the test starts an engine of its own")
    if os.geteuid() != 0:
        pytest.skip("starting an engine of the test's own needs root")
    # A short path: a Unix socket's path is limited to about 100 bytes.
    root = Path(tempfile.mkdtemp(prefix="lc-engine-", dir="/tmp"))
    engine = PrivateEngine(root)
    try:
        engine.start()
        image = docker_client.images.get(BUSYBOX)
        client = engine.client()
        try:
            client.images.load(b"".join(image.save(named=True)))
        finally:
            client.close()
        monkeypatch.setenv("DOCKER_HOST", engine.url)
        monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
        yield engine
    finally:
        engine.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_the_agent_survives_an_engine_restart_and_marks_runs_truthfully(
    store: Store, own_engine: PrivateEngine, start_agent: Callable[..., AgentProcess]
) -> None:
    cli("queue", "create", "box", "-r", "local-container", check=True)
    resume = (
        "sh -c 'if [ -n \"$WANDB_RESUME\" ]; then echo resumed; else echo first; sleep 300; fi'"
    )
    box = cli("launch", "-q", "box", "-d", BUSYBOX, "-E", resume, check=True).stdout.strip()
    local = cli("launch", "-q", "default", "-u", str(EXAMPLES / "checkpoint"), "-E",
                "python train.py", "--set", "steps=60", "--set", "step_s=0.1",
                check=True).stdout.strip()  # fmt: skip
    agent = start_agent("-q", "box", "-q", "default", "-j", "2")
    wait_for(lambda: "first" in cli("logs", box).stdout, what="the container to run")
    wait_for(lambda: store.runs.state(local) == "running", what="the process to run")
    client = own_engine.client()
    try:  # the run's container is on the test's engine, not the machine's
        assert [c.labels["launchctl.run_id"] for c in client.containers.list()] == [box]
    finally:
        client.close()

    own_engine.stop()
    assert not own_engine.up()
    time.sleep(1)  # the engine stays down a moment while runs are under way
    own_engine.start()

    # The container was stopped by the engine's shutdown: preempted, requeued, resumed.
    wait_for(lambda: store.runs.state(box) == "finished", timeout=120, what="resumed container")
    run = cli_json("runs", "show", box)
    assert run["resume_count"] == 1
    assert [a["outcome"] for a in run["attempts"]] == ["preempted", "finished"]
    assert "resumed" in cli("logs", box, check=True).stdout
    # The process run never noticed, and the agent is still there.
    wait_for(lambda: store.runs.state(local) == "finished", timeout=60, what="process run")
    assert agent.proc.poll() is None
