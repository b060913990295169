"""Fixtures for the kubernetes runner's tests: ``standin``, a stand-in API server per test
(tests/k8s/standin.py says what it is and is not), with ``KUBECONFIG`` pointing at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kubernetes", reason="the kubernetes extra is not installed")

from tests.k8s.standin import StandIn


def _serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker: Any) -> Iterator[StandIn]:
    work = tmp_path / "standin-work"
    work.mkdir()
    server = StandIn(work, docker).start()
    monkeypatch.setenv("KUBECONFIG", str(server.kubeconfig(tmp_path / "kubeconfig", "team")))
    monkeypatch.setenv("LAUNCHCTL_K8S_POLL_S", "0.1")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    """An empty stand-in API server on loopback; the agent's kubeconfig names it, with
    namespace ``team`` for its context; the runner reads it every 0.1 s."""
    yield from _serve(tmp_path, monkeypatch, None)


@pytest.fixture
def docker_standin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker: Any
) -> Iterator[StandIn]:
    """The stand-in whose pods pull their image and run in the real Docker engine (the
    suite's ``docker`` fixture: skipped, saying why, without one)."""
    yield from _serve(tmp_path, monkeypatch, docker)
