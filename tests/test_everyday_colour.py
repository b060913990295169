"""Issue 12, item 10: colour and layout on a terminal.

On a terminal run states are coloured and times relative; plain text through a pipe, with
NO_COLOR (any non-empty value) or TERM=dumb; FORCE_COLOR / CLICOLOR_FORCE force colour;
--json is never coloured; columns line up on the visible text.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launchctl.cli import output
from tests.conftest import cli, cli_json, make_script

ANSI = re.compile(r"\x1b\[[0-9;]*m")
GREEN, RED, YELLOW, DIM = "\x1b[32m", "\x1b[31m", "\x1b[33m", "\x1b[2m"
COLOUR_VARS = ("NO_COLOR", "FORCE_COLOR", "CLICOLOR_FORCE")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in COLOUR_VARS}
    env["TERM"] = "xterm-256color"
    env.update(extra)
    return env


def on_pty(*args: str, seconds: float | None = None, **extra: str) -> str:
    """Run `launchctl ARGS` with its stdout on a pseudo-terminal; what it wrote there.
    With ``seconds``, Ctrl-C it after that long (for --watch)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "launchctl", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
        env=_env(**extra),
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + (seconds if seconds is not None else 60)
    give_up = deadline + 60  # a child that never ends fails the test, never hangs the suite
    interrupted = False
    while True:
        if time.monotonic() > give_up:
            proc.kill()
            raise AssertionError(f"launchctl {' '.join(args)} did not end after its Ctrl-C")
        if seconds is not None and not interrupted and time.monotonic() > deadline:
            proc.send_signal(signal.SIGINT)
            interrupted = True
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None and not select.select([master], [], [], 0.2)[0]:
            break
    os.close(master)
    assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
    return b"".join(chunks).decode().replace("\r\n", "\n")


def piped(*args: str, **extra: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "launchctl", *args],
        capture_output=True,
        text=True,
        env=_env(**extra),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def three_states(tmp_path: Path) -> dict[str, str]:
    """A finished, a failed, a stopped (cancelled) and a queued run: their ids by state."""
    code = tmp_path / "code"
    make_script(code, "ok.py", "print('ok')\n")
    make_script(code, "bad.py", "import sys\nsys.exit(3)\n")
    cli("queue", "create", "q1", check=True)
    ids = {}
    for st, entry in (("finished", "python ok.py"), ("failed", "python bad.py")):
        proc = cli("launch", "-u", str(code), "-E", entry, "--async")  # may exit 3 if quick
        ids[st] = proc.stdout.strip().splitlines()[0]
    for st in ("stopped", "queued"):
        proc = cli("launch", "-q", "q1", "-u", str(code), "-E", "python ok.py", check=True)
        ids[st] = proc.stdout.strip()
    cli("runs", "cancel", ids["stopped"], check=True)

    def settled() -> bool:
        runs = {r["id"]: r["state"] for r in cli_json("runs", "list")}
        return all(runs.get(ids[s]) == s for s in ids)

    deadline = time.monotonic() + 60
    while not settled():
        assert time.monotonic() < deadline, cli("runs", "list").stdout
        time.sleep(0.2)
    return ids


def _columns(text: str) -> list[list[int]]:
    """On which screen column each cell of each line starts (cells are separated by 2+
    spaces); a wide character takes two columns."""
    return [
        [output.width(ln[: m.start()]) for m in re.finditer(r"(?:(?<=  )|^)\S", ln)]
        for ln in text.splitlines()
    ]


def test_states_coloured_on_a_terminal_and_columns_line_up(three_states: dict[str, str]) -> None:
    screen = on_pty("runs", "list")
    rows = {ln.split()[0] if ln.strip() else "": ln for ln in screen.splitlines()}
    assert f"{GREEN}finished\x1b[0m" in rows[three_states["finished"]]
    assert f"{RED}failed\x1b[0m" in rows[three_states["failed"]]
    assert f"{YELLOW}stopped\x1b[0m" in rows[three_states["stopped"]]
    assert f"{DIM}queued\x1b[0m" in rows[three_states["queued"]]
    assert "\x1b[1mSTATE\x1b[0m" in screen  # headers bold
    # Without its colour codes the screen is the plain text, to the column.
    plain = piped("runs", "list")
    assert "\x1b" not in plain
    visible = ANSI.sub("", screen)
    norm = lambda t: re.sub(r"\d+s ago", "Ns ago", t)  # noqa: E731 (a second may pass)
    assert norm(visible) == norm(plain)
    assert _columns(visible) == _columns(plain)
    assert all(re.search(r"\ds ago", rows[i]) for i in three_states.values())  # relative


@pytest.mark.parametrize(
    "extra",
    [{"NO_COLOR": "1"}, {"NO_COLOR": "0"}, {"TERM": "dumb"}],
    ids=["NO_COLOR=1", "NO_COLOR=0", "TERM=dumb"],
)
def test_plain_on_a_terminal_when_asked(
    three_states: dict[str, str], extra: dict[str, str]
) -> None:
    screen = on_pty("runs", "list", **extra)
    assert three_states["failed"] in screen and "failed" in screen
    assert "\x1b" not in screen


def test_empty_no_color_is_unset(three_states: dict[str, str]) -> None:
    # no-color.org: NO_COLOR counts when present and not an empty string.
    assert f"{RED}failed" in on_pty("runs", "list", NO_COLOR="")


@pytest.mark.parametrize(
    "extra, coloured",
    [
        ({}, False),
        ({"FORCE_COLOR": "1"}, True),
        ({"CLICOLOR_FORCE": "1"}, True),
        ({"FORCE_COLOR": "0"}, False),
        ({"FORCE_COLOR": "1", "NO_COLOR": "1"}, True),  # forcing is the more specific ask
    ],
    ids=["pipe", "FORCE_COLOR", "CLICOLOR_FORCE", "FORCE_COLOR=0", "FORCE_COLOR+NO_COLOR"],
)
def test_pipe_plain_unless_forced(
    three_states: dict[str, str], extra: dict[str, str], coloured: bool
) -> None:
    out = piped("runs", "list", **extra)
    assert (f"{GREEN}finished\x1b[0m" in out) is coloured
    assert ("\x1b" in out) is coloured


def test_json_never_coloured(three_states: dict[str, str]) -> None:
    for text in (
        on_pty("runs", "list", "--json"),
        piped("runs", "list", "--json", FORCE_COLOR="1"),
    ):
        assert "\x1b" not in text
        assert {r["state"] for r in json.loads(text)} >= {"finished", "failed", "stopped"}
    assert "\x1b" not in on_pty("status", "--json")


def test_status_colours_counts_and_states(three_states: dict[str, str]) -> None:
    screen = on_pty("status")
    q1 = next(ln for ln in screen.splitlines() if ln.startswith("q1"))
    assert f"{DIM}1\x1b[0m" in q1  # one queued
    assert f"{YELLOW}1\x1b[0m" in q1  # one stopped
    assert ANSI.sub("", screen).count("\n") == piped("status").count("\n")
    # --watch draws its frames into a buffer first: they are coloured all the same.
    watched = on_pty("status", "--watch", "-n", "0.2", seconds=2.0)
    assert f"{DIM}1\x1b[0m" in watched
    assert "\x1b" not in piped("status", "--json")


def test_table_pads_on_visible_text(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Record text with an escape sequence is shown escaped, never acted on; colour codes
    # take no width: every row's cells start where the header's do.
    monkeypatch.setenv("FORCE_COLOR", "1")
    output.colour.cache_clear()
    try:
        output.table(
            [
                ["a\x1b[31mb", "failed", 1],
                ["x", "running", 22],
                ["训练", "weird", None],  # wide characters: two columns each
                ["e\u0301t\u00e9", "queued", 3],  # a combining accent takes none
            ],
            ["name", "state", "n"],
        )
    finally:
        output.colour.cache_clear()
    shown = capsys.readouterr().out
    assert f"{RED}failed\x1b[0m" in shown and "\x1b[36mrunning" in shown
    visible = ANSI.sub("", shown)
    assert "a\\x1b[31mb" in visible
    assert len({tuple(c) for c in _columns(visible)}) == 1, visible
    assert visible.splitlines()[3].startswith("训练" + " " * 8 + "weird")  # 4 columns + 6 + 2


def test_runs_show_colours_its_state(three_states: dict[str, str]) -> None:
    screen = on_pty("runs", "show", three_states["failed"])
    assert f"state:      {RED}failed\x1b[0m" in screen
    assert "\x1b" not in piped("runs", "show", three_states["failed"])


def test_durations_read_as_time() -> None:
    assert output.duration(0, 12.34) == "12.3s"
    assert output.duration(0, 72) == "1m12s"
    assert output.duration(0, 3720) == "1h02m"
    assert output.duration(0, 90000) == "1d01h"
    assert output.ago(time.time() - 185) == "3m ago"
    assert output.visible_len("\x1b[32mfinished\x1b[0m") == len("finished")
