"""The agent's store watch (launchctl.agent.wake): a write to the store wakes the loop at
once; other files beside it do not. The watch loads watchfiles' watcher class alone
(issue 17: ``import watchfiles`` costs about 29 ms of every agent's start here).

It watches the store's bell (``launchctl.paths.bell_path``), which launchctl touches once
per committed write, not the database's WAL (issue 17: SQLite writes the WAL a page at a
time, and each page woke every watcher)."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from launchctl.agent import wake
from launchctl.agent.wake import Waker
from tests.conftest import wait_for


def _woken_by_writes(waker: Waker, db: Path, timeout_s: float = 10.0) -> bool:
    """Write to the store as launchctl does until the waker wakes (the watch starts in its
    own thread)."""
    from launchctl.store.db import Database

    store = Database(db)
    try:
        deadline = time.monotonic() + timeout_s
        n = 0
        while time.monotonic() < deadline:
            n += 1
            with store.write():
                store.execute("INSERT INTO t VALUES (?)", [n])
            if waker.wait(0.2):
                return True
        return False
    finally:
        store.close()


def _store(tmp_path: Path) -> Path:
    from launchctl.store.db import Database

    db = tmp_path / "launchctl.db"
    store = Database(db)
    store.execute("CREATE TABLE t (x)")
    store.close()
    return db


def _bell_mtime(db: Path) -> int:
    from launchctl.paths import bell_path

    return bell_path(db).lstat().st_mtime_ns


def test_a_write_rings_the_bell_and_a_write_that_changes_nothing_does_not(
    tmp_path: Path,
) -> None:
    """An agent's pass that finds nothing to claim is a write transaction that writes
    nothing: were it to ring, the agent would wake itself for ever."""
    from launchctl.paths import bell_path
    from launchctl.store.db import Database

    db = _store(tmp_path)
    store = Database(db)
    long_ago = 1_000_000_000  # the bell set back to 1 s after the epoch: a ring moves it
    try:
        with store.write():
            store.execute("INSERT INTO t VALUES (1)")
        assert _bell_mtime(db) > long_ago
        os.utime(bell_path(db), ns=(long_ago, long_ago))
        for _ in range(3):
            with store.write():
                store.one("SELECT COUNT(*) AS n FROM t")
                store.execute("UPDATE t SET x = 2 WHERE x = 99")  # matches no row
        assert _bell_mtime(db) == long_ago
        store.execute("UPDATE t SET x = 3")  # a write outside write(): rings too
        assert _bell_mtime(db) > long_ago
    finally:
        store.close()


def test_a_pass_rings_the_bell_once_as_it_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17: an agent's pass (``one_pass``) that commits twice (one run started,
    another's end) touches the bell once, after its last commit, and not at all when
    it wrote nothing; a failing pass still rings for what it committed."""
    from launchctl import paths
    from launchctl.store.db import Database

    rings: list[int] = []
    real = paths.ring

    def counted(fd: int) -> None:
        rings.append(fd)
        real(fd)

    monkeypatch.setattr(paths, "ring", counted)
    store = Database(_store(tmp_path))
    try:
        with store.one_pass():
            for value in (1, 2):
                with store.write():
                    store.execute("INSERT INTO t VALUES (?)", [value])
            assert rings == []  # none yet: the pass goes on
        assert len(rings) == 1
        with store.one_pass(), store.write():
            store.execute("UPDATE t SET x = 5 WHERE x = 99")  # matches no row
        assert len(rings) == 1
        with pytest.raises(RuntimeError), store.one_pass():
            with store.write():
                store.execute("INSERT INTO t VALUES (3)")
            raise RuntimeError("the pass failed after its commit")
        assert len(rings) == 2
        with store.write():  # outside a pass: at once
            store.execute("INSERT INTO t VALUES (4)")
        assert len(rings) == 3
    finally:
        store.close()


@contextlib.contextmanager
def _watching(db: Path) -> Iterator[Waker]:
    """A started waker whose watch is up (a launchctl write woke it), and quiet again."""
    waker = Waker(db, fallback_s=60)
    waker.start()
    try:
        assert _woken_by_writes(waker, db)
        waker.wait(0.3)  # the last burst's wake, if it came late
        yield waker
    finally:
        waker.close()


def test_another_program_s_write_is_left_to_the_fallback_poll(tmp_path: Path) -> None:
    """The sqlite3 shell rings no bell: its write is seen by the agent's poll, not at once."""
    db = _store(tmp_path)
    with _watching(db) as waker:
        conn = sqlite3.connect(db)
        for i in range(5):
            conn.execute("INSERT INTO t VALUES (?)", [i])
            conn.commit()
        conn.close()
        assert not waker.wait(0.5)


def test_the_bell_is_never_touched_through_a_link_put_in_its_place(tmp_path: Path) -> None:
    """Whoever may write in the store's folder (a team's shared home) and puts a link
    where the bell was gets the link touched, never what it points to."""
    from launchctl.paths import bell_path
    from launchctl.store.db import Database

    db = _store(tmp_path)
    target = tmp_path / "someone-elses-file"
    target.write_text("x")
    os.utime(target, ns=(1_000_000_000, 1_000_000_000))
    bell = bell_path(db)
    bell.parent.mkdir(exist_ok=True)
    bell.unlink(missing_ok=True)
    bell.symlink_to(target)
    store = Database(db)
    try:
        with store.write():
            store.execute("INSERT INTO t VALUES (1)")
    finally:
        store.close()
    assert target.stat().st_mtime_ns == 1_000_000_000
    assert bell.is_symlink()


def test_a_bell_folder_replaced_by_a_link_is_not_written_through(tmp_path: Path) -> None:
    """The bell's folder made a link to someone else's folder: no bell is made there and
    nothing in it is touched; the agent's watch falls back to the database itself."""
    from launchctl.paths import bell_path
    from launchctl.store.db import Database

    db = _store(tmp_path)
    elsewhere = tmp_path / "someone-elses-folder"
    elsewhere.mkdir()
    (elsewhere / "store-changed").write_text("theirs")
    os.utime(elsewhere / "store-changed", ns=(1_000_000_000, 1_000_000_000))
    bell = bell_path(db)
    if bell.parent.exists():
        for child in bell.parent.iterdir():
            child.unlink()
        bell.parent.rmdir()
    bell.parent.symlink_to(elsewhere)
    store = Database(db)
    try:
        for n in range(3):
            with store.write():
                store.execute("INSERT INTO t VALUES (?)", [n])
    finally:
        store.close()
    assert (elsewhere / "store-changed").stat().st_mtime_ns == 1_000_000_000
    assert sorted(p.name for p in elsewhere.iterdir()) == ["store-changed"]
    waker = Waker(db, fallback_s=60)
    assert waker._dir == db.parent  # the database's own folder, watched as before
    waker.start()
    try:
        conn = sqlite3.connect(db)
        deadline = time.monotonic() + 10
        woke = False
        while not woke and time.monotonic() < deadline:
            conn.execute("INSERT INTO t VALUES (9)")
            conn.commit()
            woke = waker.wait(0.2)
        conn.close()
        assert woke
    finally:
        waker.close()


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
    from launchctl.paths import bell_path

    db = _store(tmp_path)
    with _watching(db) as waker:
        other = tmp_path / "notes.txt"
        beside_bell = bell_path(db).with_name("notes.txt")
        for i in range(20):  # written, grown, replaced: none of it is the store or its bell
            other.write_text(f"line {i}\n")
            beside_bell.write_text(f"line {i}\n")
            (tmp_path / f"log.{i}").write_text("output\n")
        assert not waker.wait(0.5)


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


def test_wakers_of_one_store_share_one_watch_thread(tmp_path: Path) -> None:
    """An agent's loop and its hook dispatcher each have a waker: one watcher thread
    serves both (issue 17: each thread was woken by every write), and the watch goes on
    while one of them is still open."""
    import threading

    def watchers() -> int:
        return sum(1 for t in threading.enumerate() if t.name == "store-watch" and t.is_alive())

    db = _store(tmp_path)
    before = watchers()
    loop, hooks = Waker(db, fallback_s=60), Waker(db, fallback_s=60)
    loop.start()
    hooks.start()
    try:
        assert watchers() == before + 1
        assert _woken_by_writes(loop, db)
        assert hooks.wait(2.0)  # the same write woke the other
        loop.close()
        hooks.wait(0.3)
        assert _woken_by_writes(hooks, db)
    finally:
        loop.close()
        hooks.close()
    wait_for(lambda: watchers() == before, timeout=5, what="the watch thread to stop")


def test_the_store_watchs_descriptor_is_found_to_hand_over(tmp_path: Path) -> None:
    """``watch_descriptors`` (issue 17: a leaving agent hands them to its spawner to close)
    finds the inotify descriptor a store watch made, and nothing that is not one."""
    from launchctl.agent.wake import watch_descriptors

    if wake.rust_notify() is None or os.environ.get("WATCHFILES_FORCE_POLLING"):
        pytest.skip("no inotify watch here")
    db = tmp_path / "launchctl.db"
    db.touch()
    before = set(watch_descriptors())
    waker = Waker(db)
    waker.start()
    try:
        made = wait_for(lambda: set(watch_descriptors()) - before, what="the watch's descriptor")
        assert all(os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:inotify" for fd in made)
    finally:
        waker.close()
