"""Issue 12, item 14 (``--help`` reads well everywhere) and item 10's shell completion
(``--install-completion``, and queue names, job names and run ids completed from the store)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from launchctl.cli import app
from tests.conftest import EXAMPLES, cli

# Typer's defaults for a parameter without a metavar (``<str>``, ``{name}``, ``TEXT``...).
BAD_METAVAR = re.compile(r"<\w+>|\{\w+\}|\b(TEXT|INTEGER|FLOAT|FILENAME|BOOLEAN)\b")


def _commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    found = [(path, command)]
    for name, sub in getattr(command, "commands", {}).items():
        found.extend(_commands(sub, (*path, name)))
    return found


COMMANDS = _commands(typer.main.get_command(app))
GROUPS = [path for path, command in COMMANDS if getattr(command, "commands", None)]


def test_the_walk_sees_every_command() -> None:
    paths = {" ".join(path) for path, _ in COMMANDS}
    assert {"launch", "queue template set", "job create code", "runs show", "logs"} <= paths
    assert len(paths) > 40


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "root")
def test_help_describes_every_param_with_usual_metavars_and_an_example(
    path: tuple[str, ...],
) -> None:
    result = cli(*path, "--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "Example" in text, f"{' '.join(path)} --help has no example"
    command = dict(COMMANDS)[path]
    for param in command.params:
        if param.hidden:
            continue
        assert param.help, f"{' '.join(path)}: {param.name} has no help"
    usage_and_options = text.split("Options:")[-1] + text.splitlines()[0]
    bad = BAD_METAVAR.search(usage_and_options)
    assert bad is None, f"{' '.join(path)} --help shows metavar {bad.group(0)!r}:\n{text}"
    # An argument's own line under Arguments: says what it is, not just [required].
    if "Arguments:" in text:
        arguments = text.split("Arguments:")[1].split("Options:")[0]
        for line in arguments.splitlines():
            if line.strip():
                assert line.strip().split(None, 1)[-1] != "[required]", line


@pytest.mark.parametrize("path", GROUPS, ids=lambda p: " ".join(p) or "root")
def test_group_listings_are_not_cut_mid_sentence(path: tuple[str, ...]) -> None:
    text = cli(*path, "--help", check=True).stdout
    listing = text.split("Commands:")[1]
    lines = [line for line in listing.splitlines() if line.strip()]
    assert lines
    for line in lines:
        assert not line.rstrip().endswith("..."), f"cut: {line!r}"
        # One row per command, each a whole sentence.
        assert line.startswith("  ") and not line.startswith("    "), f"wrapped: {line!r}"
        assert line.rstrip().endswith("."), f"not a sentence: {line!r}"


@pytest.mark.parametrize("path", [("launch",), ("job", "create", "code"), ("job", "create", "git")])
def test_entry_point_help_says_it_is_not_run_through_a_shell(path: tuple[str, ...]) -> None:
    text = " ".join(cli(*path, "--help", check=True).stdout.split())
    assert "-E, --entry-point COMMAND" in text
    assert "not run through a shell" in text
    assert "-E \"sh -c 'a && b'\"" in text


def test_the_shell_line_the_help_suggests_works() -> None:
    """What -E's help says to do for a shell line does run it through a shell."""
    result = cli("launch", "-u", str(EXAMPLES / "hello"), "-E", "sh -c 'echo one && echo two'")
    assert result.returncode == 0, result.stderr
    assert "one\ntwo" in result.stdout + result.stderr


def test_group_help_names_queue_arguments_as_queue() -> None:
    text = cli("queue", "show", "--help", check=True).stdout
    assert text.splitlines()[0].endswith("QUEUE")
    assert "QUEUE  Queue name." in text
    assert "ENTITY" in cli("team", "show", "--help", check=True).stdout.splitlines()[0]


# ---- shell completion (item 10) ----


def test_completion_is_offered_and_shows_a_script() -> None:
    text = cli("--help", check=True).stdout
    assert "--install-completion" in text and "--show-completion" in text
    script = cli("--show-completion", "bash", check=True).stdout
    assert "_LAUNCHCTL_COMPLETE=complete_bash" in script


def test_the_shell_named_after_show_completion_is_the_one_shown() -> None:
    """Typer's flag ignored the word and guessed the shell from the parent processes: a
    suite started under setsid (no shell above it) got 'Shell  not supported.', and a bash
    user asking for zsh's script got bash's."""
    for args, shown in [
        (["--show-completion", "zsh"], "_LAUNCHCTL_COMPLETE=complete_zsh"),
        (["--show-completion=fish"], "complete_fish"),
        (["--show-completion", "bash"], "_LAUNCHCTL_COMPLETE=complete_bash"),
    ]:
        assert shown in cli(*args, check=True).stdout, args


def _complete(words: str, env: dict[str, str] | None = None) -> list[str]:
    parts = words.split(" ")
    result = subprocess.run(
        [sys.executable, "-m", "launchctl"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            **(env or {}),
            "_LAUNCHCTL_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(parts) - 1),
        },
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout.split()


def test_completion_of_queue_names_job_names_and_run_ids_from_the_store() -> None:
    cli("queue", "create", "gpu-large", check=True)
    cli("queue", "create", "cpu", check=True)
    cli("job", "create", "code", str(EXAMPLES / "hello"), "-n", "trainer", "-E", "python train.py",
        check=True)  # fmt: skip
    run_id = cli("launch", "-q", "cpu", "-j", "trainer", "--json", check=True).stdout
    run_id = re.search(r'"id":\s*"([^"]+)"', run_id).group(1)  # type: ignore[union-attr]

    assert _complete("launchctl queue show ") == ["cpu", "default", "gpu-large"]
    assert _complete("launchctl queue show g") == ["gpu-large"]
    assert _complete("launchctl launch -q c") == ["cpu"]
    assert _complete("launchctl runs list --queue gp") == ["gpu-large"]
    assert _complete("launchctl queue template set d") == ["default"]
    assert _complete("launchctl launch -j tr") == ["trainer"]
    assert _complete("launchctl job show t") == ["trainer"]
    assert _complete(f"launchctl logs {run_id[:3]}") == [run_id]
    assert _complete(f"launchctl runs show {run_id[:3]}") == [run_id]
    assert _complete("launchctl runs cancel zz") == []


def test_completion_without_a_store_offers_nothing_and_writes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "nowhere"
    assert _complete("launchctl queue show ", env={"LAUNCHCTL_HOME": str(home)}) == []
    assert _complete("launchctl logs ", env={"LAUNCHCTL_HOME": str(home)}) == []
    assert not home.exists()


def test_completion_on_a_broken_store_stays_quiet(tmp_path: Path) -> None:
    home = tmp_path / "broken"
    home.mkdir()
    (home / "launchctl.db").write_bytes(b"this is not a database" * 100)
    assert _complete("launchctl queue show ", env={"LAUNCHCTL_HOME": str(home)}) == []


def _built(args: list[str]) -> set[str]:
    """The command paths Typer builds while ``args`` are being run."""
    from launchctl.cli import only_the_command_named

    with only_the_command_named(args):
        return {" ".join(path) for path, _ in _commands(typer.main.get_command(app))}


def test_a_command_line_naming_one_command_builds_only_that_command() -> None:
    """Issue 17: Typer builds every command's parameters on each call; while a command
    line names one command, only it is built (a third of a call's start). Everything
    else, and the app itself afterwards, sees every command."""
    every = {" ".join(path) for path, _ in COMMANDS}
    assert _built(["runs", "list", "--json"]) == {"", "runs", "runs list"}
    assert _built(["agent", "-q", "default"]) == {"", "agent"}
    assert _built(["queue", "template", "set", "q"]) == {
        "", "queue", "queue template", "queue template set"}  # fmt: skip
    # A group's own help lists all its commands; a typo gets Click's suggestions.
    assert _built(["runs", "--help"]) == {p for p in every if p in ("", "runs") or
                                          p.startswith("runs ")}  # fmt: skip
    assert _built(["runs", "lst"]) == _built(["runs"])
    for args in ([], ["--help"], ["--version"], ["runz", "list"], ["-h"]):
        assert _built(args) == every, args
    assert {" ".join(path) for path, _ in _commands(typer.main.get_command(app))} == every


def test_completion_still_sees_every_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_LAUNCHCTL_COMPLETE", "complete_bash")
    every = {" ".join(path) for path, _ in COMMANDS}
    assert _built(["runs", "list"]) == every


def test_a_narrowed_command_line_still_refuses_and_hints_as_before() -> None:
    done = cli("runs", "list", "--no-such-flag")
    assert done.returncode == 2
    assert done.stderr.startswith("launchctl: error: no such option: --no-such-flag")
    assert "try 'launchctl runs list --help'" in done.stderr
    typo = cli("runs", "lst")
    assert typo.returncode == 2 and "Did you mean 'list'?" in typo.stderr
