"""The CLI as a whole: an example in every --help, --json on every listing, no tracebacks."""

from __future__ import annotations

import json

import pytest

from tests.conftest import cli

COMMANDS = [
    [],
    ["launch"],
    ["agent"],
    ["logs"],
    ["gpus"],
    ["queue"],
    ["queue", "create"],
    ["queue", "list"],
    ["queue", "show"],
    ["queue", "edit"],
    ["queue", "pause"],
    ["queue", "resume"],
    ["queue", "delete"],
    ["job"],
    ["job", "create"],
    ["job", "create", "code"],
    ["job", "create", "image"],
    ["job", "create", "git"],
    ["job", "list"],
    ["job", "show"],
    ["runs"],
    ["runs", "list"],
    ["runs", "show"],
    ["runs", "cancel"],
    ["runs", "rerun"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "launchctl")
def test_every_command_help_shows_an_example(command: list[str]) -> None:
    out = cli(*command, "--help", check=True).stdout
    assert "Example" in out
    assert "launchctl " in out.split("Example", 1)[1]


@pytest.mark.parametrize(
    "listing",
    [
        ["queue", "list"],
        ["job", "list"],
        ["runs", "list"],
        ["secret", "list"],
        ["team", "list"],
        ["gpus"],
    ],
)
def test_every_listing_has_json(listing: list[str]) -> None:
    assert isinstance(json.loads(cli(*listing, "--json", check=True).stdout), list)


def test_python_dash_m_and_version_work() -> None:
    assert cli("--version", check=True).stdout.startswith("launchctl ")


def test_unknown_command_and_option_are_usage_errors() -> None:
    proc = cli("frobnicate")
    assert proc.returncode == 2 and "no such command" in proc.stderr
    proc = cli("runs", "list", "--bogus")
    assert proc.returncode == 2 and "no such option" in proc.stderr


def test_an_unreadable_store_is_one_line_not_a_traceback(home) -> None:  # type: ignore[no-untyped-def]
    home.mkdir(parents=True)
    (home / "launchctl.db").write_text("this is not a database")
    proc = cli("queue", "list")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
