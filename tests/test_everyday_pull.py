"""A pull shows its progress: a few aggregate lines and a summary, never a line per event."""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any

from launchctl.runners.local_container import PullProgress
from tests.conftest import BUSYBOX, cli, cli_json

REGISTRY = "127.0.0.1:5000"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def events(layer: str, total: int) -> list[dict[str, Any]]:
    return [
        {"status": "Pulling fs layer", "id": layer, "progressDetail": {}},
        *[
            {
                "status": "Downloading",
                "id": layer,
                "progressDetail": {"current": part, "total": total},
            }
            for part in range(0, total + 1, total // 10)
        ],
        {"status": "Download complete", "id": layer, "progressDetail": {}},
        {"status": "Extracting", "id": layer, "progressDetail": {"current": total, "total": total}},
        {"status": "Pull complete", "id": layer, "progressDetail": {}},
    ]


def test_pull_progress_is_aggregated_and_throttled() -> None:
    clock = Clock()
    progress = PullProgress("x/y:1", clock=clock)
    stream = [
        {"status": "Pulling from x/y", "id": "1"},
        {"status": "Already exists", "id": "aaa", "progressDetail": {}},
        *events("bbb", 80_000_000),
        *events("ccc", 40_000_000),
        {"status": "Digest: sha256:00"},
        {"status": "Status: Downloaded newer image for x/y:1"},
    ]
    lines = []
    for event in stream:
        clock.now += 0.25
        note = progress.feed(event)
        if note is not None:
            lines.append(note)
    assert 1 <= len(lines) <= len(stream) * 0.25 / 2 + 1
    assert lines[0].startswith("launchctl: pulling x/y:1: ")
    assert all(line.endswith("s]") for line in lines)
    assert progress.state() == "3/3 layers, 120.0 MB of 120.0 MB"
    assert progress.summary() == (
        f"launchctl: pulled x/y:1 in {clock.now - 100.0:.1f}s (3 layers, 120.0 MB)"
    )


def test_pull_progress_line_shows_layers_bytes_and_elapsed_time() -> None:
    clock = Clock()
    progress = PullProgress("x/y:1", clock=clock)
    assert progress.feed({"status": "Pulling fs layer", "id": "a"}) is None
    assert progress.feed({"status": "Already exists", "id": "b"}) is None
    clock.now += 2.5
    note = progress.feed(
        {"status": "Downloading", "id": "a", "progressDetail": {"current": 45_200_000,
                                                               "total": 120_000_000}}
    )  # fmt: skip
    assert note == "launchctl: pulling x/y:1: 1/2 layers, 45.2 MB of 120.0 MB [2.5s]"
    clock.now += 1.0
    assert progress.feed({"status": "Pull complete", "id": "a"}) is None  # too soon


def test_a_run_that_pulls_its_image_logs_a_short_progress_account(docker: Any) -> None:
    image = f"{REGISTRY}/lcpull-{os.urandom(4).hex()}:1"
    # A layer of its own on top of BUSYBOX (which stays): the pull must download it.
    dockerfile = f"FROM {BUSYBOX}\nRUN head -c 3000000 /dev/urandom > /blob\n"
    try:
        docker.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=image, rm=True)
        for event in docker.api.push(image, stream=True, decode=True):
            assert "error" not in event, event
        docker.images.remove(image, force=True)
        assert not any(image in img.tags for img in docker.images.list())
        cli("queue", "create", "pull", "-r", "local-container", check=True)
        run = cli("launch", "-q", "pull", "-d", image, "-E", "echo hi", check=True).stdout.strip()
        cli("agent", "-q", "pull", "--burst", check=True, timeout=120)
        shown = cli_json("runs", "show", run)
        assert shown["state"] == "finished", shown
        log = cli("logs", run, check=True).stdout
        assert "hi" in log.splitlines()
        pull_lines = [line for line in log.splitlines() if line.startswith("launchctl: pull")]
        assert pull_lines[0] == f"launchctl: pulling {image}"
        assert pull_lines[-1].startswith(f"launchctl: pulled {image} in ")
        assert pull_lines[-1].endswith("s (2 layers, 3.0 MB)"), pull_lines
        assert len(pull_lines) <= 6, log
        assert len(log.splitlines()) <= 10, log
    finally:
        with contextlib.suppress(Exception):
            docker.images.remove(image, force=True)
