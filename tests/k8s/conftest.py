"""Fixtures for the kubernetes runner's tests: ``standin``, a stand-in API server per test
(tests/k8s/standin.py says what it is and is not), with ``KUBECONFIG`` pointing at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("kubernetes", reason="the kubernetes extra is not installed")

from tests.k8s.standin import StandIn


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    """An empty stand-in API server on loopback; the agent's kubeconfig names it, with
    namespace ``team`` for its context; the runner reads it every 0.1 s."""
    work = tmp_path / "standin-work"
    work.mkdir()
    server = StandIn(work).start()
    monkeypatch.setenv("KUBECONFIG", str(server.kubeconfig(tmp_path / "kubeconfig", "team")))
    monkeypatch.setenv("LAUNCHCTL_K8S_POLL_S", "0.1")
    try:
        yield server
    finally:
        server.close()
