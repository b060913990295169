"""The agent's store watch (launchctl.agent.wake): a write to the store wakes the loop at
once; other files beside it do not. The watch loads watchfiles' watcher class alone
(issue 17: ``import watchfiles`` costs about 29 ms of every agent's start here)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launchctl.agent import wake
from launchctl.agent.wake import Waker


def _woken_by_writes(waker: Waker, db: Path, timeout_s: float = 10.0) -> bool:
    """Write to the store until the waker wakes (the watch starts in its own thread)."""
    conn = sqlite3.connect(db)
    try:
        deadline = time.monotonic() + timeout_s
        n = 0
        while time.monotonic() < deadline:
            n += 1
            conn.execute("INSERT INTO t VALUES (?)", [n])
            conn.commit()
            if waker.wait(0.2):
                return True
        return False
    finally:
        conn.close()


def _store(tmp_path: Path) -> Path:
    db = tmp_path / "launchctl.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    return db


SCRIPT = """
import json, sys, sqlite3, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from tests.test_wake import _woken_by_writes
from launchctl.agent.wake import Waker
waker = Waker(Path(sys.argv[1]), fallback_s=60)
waker.start()
woke = _woken_by_writes(waker, Path(sys.argv[1]))
loaded = {"woke": woke, "package": "watchfiles" in sys.modules,
          "watcher": "watchfiles._rust_notify" in sys.modules}
waker.close()
import watchfiles  # a later import of the package reuses the watcher's module
loaded["later_import"] = watchfiles.watch is not None
print(json.dumps(loaded))
"""


def test_a_store_write_wakes_the_watch_without_the_watchfiles_package(tmp_path: Path) -> None:
    db = _store(tmp_path)
    root = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(db), root],
        capture_output=True, text=True, timeout=60, cwd=root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"woke": True, "package": False, "watcher": True, "later_import": True}


def test_other_files_beside_the_store_do_not_wake_it(tmp_path: Path) -> None:
    db = _store(tmp_path)
    waker = Waker(db, fallback_s=60)
    waker.start()
    try:
        assert _woken_by_writes(waker, db)  # the watch is up
        waker.wait(0.3)  # the last burst's wake, if it came late
        other = tmp_path / "notes.txt"
        for i in range(20):  # written, grown, replaced: none of it is the store
            other.write_text(f"line {i}\n")
            (tmp_path / f"log.{i}").write_text("output\n")
        assert not waker.wait(0.5)
    finally:
        waker.close()


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"WATCHFILES_FORCE_POLLING": "1", "WATCHFILES_POLL_DELAY_MS": "50"},
        {"WATCHFILES_FORCE_POLLING": "false", "WATCHFILES_DEBUG": "1"},
        {"WATCHFILES_POLL_DELAY_MS": "soon", "WATCHFILES_IGNORE_PERMISSION_DENIED": "1"},
    ],
)
def test_the_watch_reads_the_environment_as_watchfiles_does(
    environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compared with watchfiles' own reading of the same variables (its main module)."""
    main = pytest.importorskip("watchfiles.main")
    needed = ("_default_debug", "_default_force_polling", "_default_poll_delay_ms",
              "_default_ignore_permission_denied")  # fmt: skip
    if not all(hasattr(main, name) for name in needed):
        pytest.skip("this watchfiles reads its environment elsewhere")
    for name in ("WATCHFILES_FORCE_POLLING", "WATCHFILES_POLL_DELAY_MS", "WATCHFILES_DEBUG",
                 "WATCHFILES_IGNORE_PERMISSION_DENIED"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    theirs = (
        main._default_debug(None),
        main._default_force_polling(None),
        main._default_poll_delay_ms(300),
        False,
        main._default_ignore_permission_denied(None),
    )
    assert wake._watch_settings() == theirs


class _Changed:
    """A later watchfiles' RustNotify that takes other arguments."""

    def __init__(self, *args: object) -> None:
        raise TypeError("RustNotify() takes other arguments now")


@pytest.mark.parametrize("found", [None, _Changed], ids=["no class alone", "other signatures"])
def test_without_the_class_alone_the_public_watch_still_wakes(
    found: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wake, "rust_notify", lambda: found)
    db = _store(tmp_path)
    waker = Waker(db, fallback_s=60)
    waker.start()
    try:
        assert _woken_by_writes(waker, db)
    finally:
        waker.close()
