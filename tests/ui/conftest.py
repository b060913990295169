"""Fixtures for the web view's tests: ``ui_server``, a real ``launchctl ui --port 0``
process on loopback, and ``start_ui`` to start one with other flags or as another user."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

URL_PREFIX = "launchctl ui: "


class UiServer:
    """A running server: ``base_url, token = server`` (``base_url`` has no trailing
    slash); ``.proc`` is its process, ``.log`` its stderr."""

    def __init__(self, base_url: str, token: str, proc: subprocess.Popen[str], log: Path):
        self.base_url = base_url
        self.token = token
        self.proc = proc
        self.log = log

    def __iter__(self) -> Iterator[str]:
        return iter((self.base_url, self.token))

    def url(self, path: str) -> str:
        return self.base_url + path


def _start(args: tuple[str, ...], env: dict[str, str] | None, log: Path) -> UiServer:
    err = open(log, "w")  # noqa: SIM115 - the process owns it; closed with the file table
    proc = subprocess.Popen(
        [sys.executable, "-m", "launchctl", "ui", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the server prints its URL once it listens
    if not first.startswith(URL_PREFIX):
        proc.kill()
        proc.wait()
        raise AssertionError(f"launchctl ui did not start: {first!r}\n{log.read_text()}")
    url = first[len(URL_PREFIX) :].strip()
    base, _, token = url.partition("/?token=")
    with urllib.request.urlopen(base + "/healthz", timeout=10) as resp:
        assert resp.status == 200
    return UiServer(base, token, proc, log)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture
def start_ui(tmp_path: Path, home: Path) -> Iterator[Callable[..., UiServer]]:
    """``start_ui(*flags, env={...})``: a real ``launchctl ui --port 0`` on this test's
    store; stopped at teardown. Its stderr goes to ``tmp_path/ui-N.log``."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> UiServer:
        server = _start(args, env, tmp_path / f"ui-{len(started)}.log")
        started.append(server.proc)
        return server

    yield start
    for proc in started:
        _stop(proc)


@pytest.fixture
def ui_server(start_ui: Callable[..., UiServer]) -> UiServer:
    """A running ``launchctl ui`` on a free loopback port: ``base_url, token = ui_server``."""
    return start_ui()
