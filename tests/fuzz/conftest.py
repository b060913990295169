"""The store every fuzz test runs against (``seed``)."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest

from .harness import HELLO, SEED_QUEUE_CONFIG, Result, Seed, run_cli


def _ok(*args: str) -> Result:
    result = run_cli(*args)
    assert result.code == 0 and result.escaped is None, str(result)
    return result


@pytest.fixture
def seed(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Seed:
    """A store with a templated queue, a container queue, two jobs and one queued run."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    _ok("queue", "create", "q", "--config", json.dumps(SEED_QUEUE_CONFIG))
    _ok("queue", "create", "box", "--resource", "local-container")
    _ok("job", "create", "code", HELLO, "-E", "python train.py", "-n", "hello")
    _ok("job", "create", "image", "launchctl-test/busybox:latest", "-E", "true", "-n", "img")
    run_id = _ok("launch", "--queue=q", "--job=hello").out.strip()
    assert re.fullmatch(r"[a-z0-9]{8}", run_id), run_id
    # Odd things on disk for path arguments: a directory named like a config file, a
    # dangling link, a link loop, odd file names, a code directory with odd file names.
    (work / "dir.json").mkdir()
    (work / "dangling.yaml").symlink_to(work / "nowhere.yaml")
    (work / "loop.json").symlink_to(work / "loop.json")
    code = work / "code"
    code.mkdir()
    (code / "train.py").write_text("print('hi')\n")
    (code / "ünïcödé 🙂.py").write_text("x = 1\n")
    (code / "a\nnewline").write_text("")
    (code / "link").symlink_to("train.py")
    (work / "empty-dir").mkdir()
    (work / "a file.txt").write_text("not a directory\n")
    return Seed(home=home, work=work, run_id=run_id, names=itertools.count())
