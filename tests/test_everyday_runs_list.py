"""Issue 12 item 8: `runs list` tells runs apart: --job/--project/--since filters,
run-config columns (chosen or automatic), GPU/attempt/rerun-of columns, and --json with
ISO times and priority names as the table shows them."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

from launchctl.store import Store
from tests.conftest import EXAMPLES, cli, cli_json

HELLO = str(EXAMPLES / "hello")


def _launch(*extra: str) -> str:
    return cli(
        "launch", "-q", "default", "-u", HELLO, "-E", "python train.py", *extra, check=True
    ).stdout.strip()


def _table(*args: str) -> list[list[str]]:
    out = cli("runs", "list", *args, check=True).stdout.splitlines()
    return [row.split() for row in out]


def test_filters_by_job_project_and_since(store: Store, tmp_path: Path) -> None:
    a = _launch("--set", "lr=0.1")
    b = _launch("--set", "lr=0.2", "-p", "vision")
    other = tmp_path / "other"
    other.mkdir()
    (other / "main.py").write_text("print('x')\n")
    c = cli(
        "launch", "-q", "default", "-u", str(other), "-E", "python main.py", check=True
    ).stdout.strip()
    old = _launch("--set", "lr=0.3")
    with store.db.write():
        store.db.execute(
            "UPDATE runs SET created_at = ? WHERE id = ?", [time.time() - 3 * 86400, old]
        )
    assert [r["id"] for r in cli_json("runs", "list", "--job", "hello")] == [old, b, a]
    assert [r["id"] for r in cli_json("runs", "list", "-j", "other")] == [c]
    assert [r["id"] for r in cli_json("runs", "list", "--project", "vision")] == [b]
    assert [r["id"] for r in cli_json("runs", "list", "--since", "1d")] == [c, b, a]
    assert [r["id"] for r in cli_json("runs", "list", "--since", "4d")] == [old, c, b, a]
    tomorrow = (dt.date.today() + dt.timedelta(days=2)).isoformat()
    assert cli_json("runs", "list", "--since", tomorrow) == []
    # one version of a job: NAME:vN
    version = cli_json("runs", "show", a)["spec"]["job"].rpartition(":")[2]
    assert a in [r["id"] for r in cli_json("runs", "list", "-j", f"hello:{version}")]


def test_bad_filters_are_one_line_refusals(home: Path) -> None:
    for args, words in (
        (["--since", "yesterday"], "invalid --since value 'yesterday'"),
        (["--since", "5x"], "invalid --since value"),
        (["--columns", "lr,,bs"], "invalid --columns"),
    ):
        proc = cli("runs", "list", *args)
        assert proc.returncode == 1, args
        assert proc.stderr.count("\n") == 1 and words in proc.stderr, proc.stderr
        assert not (home / "launchctl.db").exists()
    _launch()
    proc = cli("runs", "list", "--job", "nope")
    assert proc.returncode == 1 and "job 'nope' does not exist" in proc.stderr


def test_columns_show_the_run_config_keys_that_differ_or_those_asked_for() -> None:
    _launch("--set", "lr=0.1", "--set", "batch_size=32", "--set", "seed=1")
    _launch("--set", "lr=0.2", "--set", "batch_size=32", "--set", "seed=1")
    _launch("--set", "lr=0.3", "--set", "batch_size=64", "--set", "seed=1")
    rows = _table()
    header = rows[0]
    assert "LR" in header and "BATCH_SIZE" in header and "SEED" not in header
    lr = header.index("LR")
    assert [r[lr] for r in rows[1:]] == ["0.3", "0.2", "0.1"]
    header = _table("--columns", "seed,lr")[0]
    assert header[5:7] == ["SEED", "LR"] and "BATCH_SIZE" not in header
    header = _table("--columns", "none")[0]
    assert header == ["RUN", "NAME", "QUEUE", "STATE", "PRIORITY", "EXIT", "RUNTIME", "CREATED"]
    # a key some runs lack shows '-' there
    rows = _table("--columns", "momentum")
    assert rows[0][5] == "MOMENTUM" and all(r[5] == "-" for r in rows[1:])


def test_gpu_attempt_and_rerun_columns_appear_when_a_run_has_them(store: Store) -> None:
    first = _launch("--set", "lr=0.1")
    assert "GPUS" not in _table()[0] and "RERUN-OF" not in _table()[0]
    second = cli("runs", "rerun", first, "--set", "lr=0.5", check=True).stdout.strip()
    # two claims of the first run (an agent took it, lost it, took it again) and a GPU
    store.runs.move(first, ["queued"], "claimed", agent_id="a1")
    store.runs.move(first, ["claimed"], "queued", agent_id="a1", message="requeued")
    store.runs.move(first, ["queued"], "claimed", agent_id="a2")
    with store.db.write():
        store.db.execute("UPDATE runs SET devices = ? WHERE id = ?", [json.dumps([0, 1]), first])
    rows = _table()
    header = rows[0]
    by_id = {r[0]: r for r in rows[1:]}
    assert by_id[first][header.index("GPUS")] == "0,1"
    assert by_id[first][header.index("ATTEMPTS")] == "2"
    assert by_id[second][header.index("ATTEMPTS")] == "0"
    assert by_id[second][header.index("RERUN-OF")] == first
    listed = {r["id"]: r for r in cli_json("runs", "list")}
    assert listed[first]["attempts"] == 2 and listed[second]["rerun_of"] == first


def test_json_has_iso_times_and_priority_names_matching_the_table() -> None:
    run = _launch("--priority", "high")
    (row,) = cli_json("runs", "list")
    assert row["priority"] == "high"
    assert _table()[1][4] == "high"
    created = dt.datetime.fromisoformat(row["created_at"])
    assert created.tzinfo is not None
    assert abs(created.timestamp() - time.time()) < 60
    assert row["started_at"] is None and row["id"] == run
