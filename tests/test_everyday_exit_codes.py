"""Issue 12, items 12 and 16: one exit-code rule for refusals, and the short `lctl` name.

The rule: exit 2 when Click cannot parse the command line (nothing of launchctl ran),
exit 1 when launchctl parsed it and refused what it asked; either way one line on
stderr, ``launchctl: error: ...``, and nothing written.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, cli, table_counts

HELLO = str(EXAMPLES / "hello")
ROOT = Path(__file__).resolve().parent.parent

USAGE = [  # Click's own refusals: exit 2, with a hint naming the command's --help
    (("frobnicate",), "no such command 'frobnicate'", "launchctl --help"),
    (("runs", "lisst"), "no such command 'lisst'", "launchctl runs --help"),
    (("runs", "list", "--bogus"), "no such option: --bogus", "launchctl runs list --help"),
    (("queue", "create"), "missing argument", "launchctl queue create --help"),
    (("runs", "list", "--limit", "abc"), "'abc' is not a valid int", "launchctl runs list --help"),
    (("queue", "create", "q", "--resource"), "requires an argument", "launchctl queue create"),
    (("job", "create", "spaceship", HELLO), "no such command", "launchctl job create --help"),
    (("launch", "-u", HELLO, "-E", "x", "-P", "urgentest", "--nope"), "no such option", "launch"),
]

REFUSED = [  # launchctl's own refusals: exit 1
    (("runs", "list", "--state", "done"), "unknown state 'done'"),
    (("runs", "show", "nosuchrun"), "nosuchrun"),
    (("queue", "show", "ghost"), "ghost"),
    (("queue", "create", "bad name!"), "bad name!"),
    (("launch", "-q", "default", "-j", "a", "-d", "b"), "cannot use both --job (-j)"),
    (("launch", "-u", HELLO, "-E", "python train.py", "-v", "gpus=2"), "--set-var (-v) needs"),
    (("launch", "-q", "", "-u", HELLO, "-E", "python train.py"), "--queue (-q) needs a value"),
    (("agent",), "no queue to serve"),
    (("job", "show", "ghost"), "ghost"),
]


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.stderr.startswith("launchctl: error: "), proc.stderr
    assert proc.stderr.count("\n") == 1, f"not one line:\n{proc.stderr}"
    assert "Usage:" not in proc.stderr and "Traceback" not in proc.stderr
    return proc.stderr


@pytest.mark.parametrize(("args", "message", "hint"), USAGE, ids=lambda v: str(v)[:30])
def test_a_command_line_click_cannot_parse_exits_2_in_one_line(
    home: Path, args: tuple[str, ...], message: str, hint: str
) -> None:
    cli("queue", "list", check=True)
    before = table_counts(home)
    proc = cli(*args, timeout=20)
    assert proc.returncode == 2, proc.stderr
    err = _one_line(proc)
    assert message in err.lower(), err
    assert f"(try '{hint}" in err, err
    assert table_counts(home) == before


@pytest.mark.parametrize(("args", "message"), REFUSED, ids=lambda v: str(v)[:30])
def test_a_refusal_by_launchctl_exits_1_in_one_line(
    home: Path, args: tuple[str, ...], message: str
) -> None:
    cli("queue", "list", check=True)
    before = table_counts(home)
    proc = cli(*args, timeout=20)
    assert proc.returncode == 1, proc.stderr
    assert message in _one_line(proc)
    assert table_counts(home) == before


def test_an_argument_that_is_not_utf8_is_a_usage_error(home: Path) -> None:
    """A command line that cannot be read is refused as Click's errors are: exit 2."""
    proc = subprocess.run(
        [sys.executable, "-m", "launchctl", "queue", "create", b"q\xff"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("launchctl: error: argument 'q")
    assert proc.stderr.endswith("' is not valid UTF-8\n") and proc.stderr.count("\n") == 1
    assert table_counts(home) == {}


def test_a_group_without_its_command_prints_its_help_and_exits_2() -> None:
    proc = cli("queue")
    assert proc.returncode == 2
    assert "Commands:" in proc.stderr and "create" in proc.stderr and proc.stdout == ""


def test_help_and_version_exit_0() -> None:
    assert cli("runs", "list", "--help", check=True).stdout.startswith("Usage: launchctl runs")
    assert cli("--version", check=True).stdout.startswith("launchctl ")


def test_a_prompt_closed_at_eof_is_one_line_and_exit_1() -> None:
    """Click's ``Abort`` (a confirmation closed at EOF) is one line, not a bare 'Aborted!'."""
    probe = (
        "import sys, typer\n"
        "from launchctl.cli import app, main\n"
        "@app.command('probe')\n"
        "def probe() -> None:\n"
        "    typer.confirm('go on?', abort=True)\n"
        "sys.argv = ['launchctl', 'probe']\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, input="", timeout=30
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.rstrip("\n").endswith("launchctl: error: aborted"), proc.stderr
    assert "Aborted!" not in proc.stderr


# -- item 16: a short entry point --------------------------------------------------------


def test_pyproject_installs_lctl_as_the_same_cli() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["lctl"] == scripts["launchctl"] == "launchctl.cli:main"


def test_lctl_runs_from_the_installed_venv(home: Path) -> None:
    """An installed launchctl (scripts/test.sh installs it editable) has ``lctl`` next to
    the interpreter; it is the whole CLI, and its help and hints name ``lctl``."""
    lctl = Path(sys.executable).parent / "lctl"
    assert lctl.exists(), f"{lctl} missing: run `pip install -e .` (scripts/test.sh does)"
    env = {**os.environ}
    proc = subprocess.run([lctl, "--help"], capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 0 and proc.stdout.startswith("Usage: lctl "), proc.stderr
    assert "queue" in proc.stdout and "launch" in proc.stdout
    proc = subprocess.run(
        [lctl, "queue", "create", "--bogus"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "launchctl: error: no such option: --bogus (try 'lctl queue create --help')\n"
    )
    made = subprocess.run(
        [lctl, "queue", "create", "short", "--json"], capture_output=True, text=True, timeout=30
    )
    assert made.returncode == 0, made.stderr
    listed = cli("queue", "list", check=True).stdout
    assert "short" in listed


def test_a_run_killed_by_a_signal_names_the_signal_in_its_reason(
    home: Path, tmp_path: Path
) -> None:
    """The wrapper shell records a command killed by signal N as 128+N (no shell can
    tell the two apart): an adversarial QA pass found an out-of-memory kill read as a
    plain 'exit code 137'. The code stays; the reason names the signal it is the code of."""
    from tests.conftest import cli_json, make_script

    code = make_script(tmp_path / "code", "main.py", "print(1)\n").parent
    for command, reason in (
        ("sh -c 'kill -9 $$'",
         "exit code 137 (that of a process killed by SIGKILL, as the out-of-memory killer"
         " sends)"),
        ("sh -c 'kill -SEGV $$'", "exit code 139 (that of a process killed by SIGSEGV)"),
        ("sh -c 'exit 3'", "exit code 3"),
    ):  # fmt: skip
        proc = cli("launch", "-u", str(code), "-E", command)
        run = cli_json("runs", "list", "-n", "1")[0]
        assert (run["state"], run["reason"]) == ("failed", reason), proc.stderr
        assert proc.returncode == run["exit_code"]
