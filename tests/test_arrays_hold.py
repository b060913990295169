"""`runs hold --array` / `runs release --array` (issue 18): every queued run of an array
at once, as `scontrol hold` / `scontrol release` take an array job's pending tasks; each
run decided as `runs hold` decides it (its author, or an admin of its entity or its
queue's)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import cli, cli_json, wait_for
from tests.test_arrays import ALICE, BOB, drain, launch_array, one_line_error, shared_queue, task


def _held(array_id: str) -> dict[int, tuple[str, bool]]:
    rows = cli_json("runs", "list", "--array", array_id, "--json", "--limit", "0")
    return {r["array_index"]: (r["state"], bool(r["held"])) for r in rows}


def test_holding_an_array_keeps_every_queued_run_of_it_from_any_agent(tmp_path: Path) -> None:
    shared_queue()
    array_id = launch_array(task(tmp_path), "0-3%2", env=ALICE)
    out = cli("runs", "hold", "--array", array_id, env=ALICE, check=True).stdout
    assert out.count(" held\n") == 4
    assert _held(array_id) == {i: ("queued", True) for i in range(4)}
    drain(env=ALICE)  # --burst: nothing may be claimed, so it leaves them queued
    assert _held(array_id) == {i: ("queued", True) for i in range(4)}
    again = cli("runs", "hold", "--array", array_id, env=ALICE, check=True).stdout
    assert again.strip() == f"array {array_id}: no queued run to hold (4 already held)"

    cli("runs", "release", "--array", array_id, env=ALICE, check=True)
    drain(env=ALICE)
    wait_for(lambda: {s for s, _ in _held(array_id).values()} == {"finished"}, what="the array")


def test_a_member_may_not_hold_or_release_another_s_array_and_nothing_changes(
    tmp_path: Path,
) -> None:
    shared_queue()
    array_id = launch_array(task(tmp_path), "0-2", env=ALICE)
    refused = cli("runs", "hold", "--array", array_id, env=BOB)
    assert refused.returncode == 1 and refused.stdout == ""
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 3 and all("may not hold run" in ln for ln in lines), lines
    assert _held(array_id) == {i: ("queued", False) for i in range(3)}

    cli("runs", "hold", "--array", array_id, env=ALICE, check=True)
    refused = cli("runs", "release", "--array", array_id, env=BOB)
    assert refused.returncode == 1 and "may not release run" in refused.stderr
    assert _held(array_id) == {i: ("queued", True) for i in range(3)}


def test_hold_takes_a_run_or_an_array_not_both_nor_neither(tmp_path: Path) -> None:
    shared_queue()
    array_id = launch_array(task(tmp_path), "0-1", env=ALICE)
    run_id = cli_json("runs", "list", "--array", array_id, "--json")[0]["id"]
    one_line_error(cli("runs", "hold", run_id, "--array", array_id, env=ALICE))
    one_line_error(cli("runs", "release", env=ALICE))
    one_line_error(cli("runs", "hold", "--array", "a-nosuch00", env=ALICE))
    assert _held(array_id) == {i: ("queued", False) for i in range(2)}
