"""The CLI as a whole: an example in every --help, --json on every listing, no tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, cli

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


LISTINGS = [["queue", "list"], ["job", "list"], ["runs", "list"], ["secret", "list"],
            ["team", "list"], ["gpus"]]  # fmt: skip
SECRET_VALUE = "s3cr3t-value-never-listed"


@pytest.mark.parametrize("listing", LISTINGS, ids=" ".join)
def test_every_listing_has_json(listing: list[str]) -> None:
    assert isinstance(json.loads(cli(*listing, "--json", check=True).stdout), list)


@pytest.fixture
def rows(home: Path) -> dict[str, str]:
    """A store with a row of each kind a listing shows."""
    cli("queue", "create", "box", check=True)
    cli("job", "create", "code", str(EXAMPLES / "hello"), "-E", "python train.py", "-n", "hello",
        check=True)  # fmt: skip
    run_id = cli("launch", "-q", "box", "-j", "hello", "--name", "r1", check=True).stdout.strip()
    cli("secret", "set", "mykey", input=SECRET_VALUE, check=True)
    cli("team", "create", "vision", check=True)
    cli("agent", "-q", "default", "--gpus", "0,1", "--burst", check=True)  # reports 2 GPUs
    return {"run": run_id}


@pytest.mark.parametrize("listing", LISTINGS, ids=" ".join)
def test_every_listing_has_json_with_its_rows(listing: list[str], rows: dict[str, str]) -> None:
    out = cli(*listing, "--json", check=True).stdout
    items = json.loads(out)
    assert isinstance(items, list) and all(isinstance(item, dict) for item in items)
    what = " ".join(listing)
    if what == "queue list":
        assert sorted((q["name"], q["queued"]) for q in items) == [("box", 1), ("default", 0)]
        assert {q["resource"] for q in items} == {"local-process"}
    elif what == "job list":
        assert [(j["name"], j["source_type"], j["versions"]) for j in items] == [
            ("hello", "code", 1)
        ]
    elif what == "runs list":
        assert [(r["id"], r["name"], r["state"], r["queue_name"]) for r in items] == [
            (rows["run"], "r1", "queued", "box")
        ]
    elif what == "secret list":
        assert items == [{"name": "mykey"}]
        assert SECRET_VALUE not in out
    elif what == "team list":
        assert ("vision", "admin") in [(t["name"], t["role"]) for t in items]
    else:
        assert [(g["index"], g["state"]) for g in items] == [(0, "free"), (1, "free")]
    # The table says the same rows.
    table = cli(*listing, check=True).stdout
    for item in items:
        key = item.get("id") if what == "runs list" else item.get("name", item.get("index"))
        if what != "gpus":
            assert str(key) in table, (key, table)


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
