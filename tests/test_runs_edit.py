"""`runs edit` (issue 18): change a queued run's overrides, template values or priority.

Driven through the real CLI: validated as a launch is, refused once an agent claimed the
run, only by its author or an admin of its entity, and never a half-applied edit for an
agent that claims at the same moment (a real agent races real edits).
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from launchctl.errors import StateConflict
from launchctl.store import Store
from tests.conftest import StartAgent, cli, cli_json, make_script, table_counts, wait_for

ALICE = {"LAUNCHCTL_USER": "alice"}
BOB = {"LAUNCHCTL_USER": "bob"}
CAROL = {"LAUNCHCTL_USER": "carol"}
MALLORY = {"LAUNCHCTL_USER": "mallory"}

# A queue whose one template field is checked: cpus 1..4.
CPUS = {
    "resource_args": {"local-process": {"env": {"CPUS": "{{cpus}}"}}},
    "template_variables": {"cpus": {"type": "integer", "minimum": 1, "maximum": 4, "default": 1}},
}
SHOW = "import json, os\nprint('SEEN', os.environ['WANDB_CONFIG'], os.environ.get('CPUS'))\n"


def one_line_error(proc: Any) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    return str(proc.stderr)


def code(tmp_path: Path, body: str = SHOW) -> str:
    return str(make_script(tmp_path / "code", "main.py", body).parent)


def launch(src: str, *args: str, queue: str = "q", env: dict[str, str] | None = None) -> str:
    proc = cli("launch", "-q", queue, "-u", src, "-E", "python main.py", *args, env=env,
               check=True)  # fmt: skip
    return proc.stdout.strip()


def team() -> None:
    """alice administers entity 'vision'; bob and carol are members."""
    cli("team", "create", "vision", env=ALICE, check=True)
    for who in ("bob", "carol"):
        cli("team", "add", "vision", who, env=ALICE, check=True)
    cli("queue", "create", "q", "--entity", "vision", "--config", json.dumps(CPUS), env=ALICE,
        check=True)  # fmt: skip


def edit_notes(run_id: str) -> list[str]:
    events = cli_json("runs", "show", run_id)["events"]
    return [e["message"] for e in events if str(e["message"] or "").startswith("edited")]


def test_an_edit_changes_what_the_run_runs_and_is_recorded(
    store: Store, home: Path, tmp_path: Path
) -> None:
    cli("queue", "create", "q", "--config", json.dumps(CPUS), check=True)
    run_id = launch(code(tmp_path), "--set", "lr=0.1", "--set", "epochs=3", "-v", "cpus=1")
    proc = cli("runs", "edit", run_id[:5], "--set", "lr=0.05", "-v", "cpus=3", "-P", "high")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        f"run {run_id} edited: lr 0.1 -> 0.05, template variable cpus 1 -> 3,"
        " priority medium -> high\n"
    )
    shown = cli_json("runs", "show", run_id)
    assert shown["spec"]["overrides"]["run_config"] == {"lr": 0.05, "epochs": 3}
    assert shown["spec"]["template_variables"] == {"cpus": 3}
    assert shown["priority"] == 1 and shown["spec"]["priority"] == "high"  # 1: high
    user = shown["spec"]["author"]
    assert edit_notes(run_id) == [
        f"edited by {user}: lr 0.1 -> 0.05, template variable cpus 1 -> 3, priority medium -> high"
    ]
    # A variable the run left to the queue's default says the default it had (a QA walk
    # read "(unset)" as if the run would have had none).
    other = launch(code(tmp_path / "other"))
    proc = cli("runs", "edit", other, "-v", "cpus=2", check=True)
    assert proc.stdout == f"run {other} edited: template variable cpus (default 1) -> 2\n"
    # The same values again: nothing changes, nothing is recorded.
    before = table_counts(home)
    again = cli("runs", "edit", run_id, "--set", "lr=0.05", "-v", "cpus=3", "-P", "high")
    assert again.returncode == 0 and "unchanged" in again.stdout
    assert table_counts(home) == before
    # The agent runs what the edit left.
    cli("agent", "-q", "q", "--burst", check=True)
    assert store.runs.get(run_id)["state"] == "finished"
    log = Path(cli_json("runs", "show", run_id)["log_path"]).read_text()
    assert 'SEEN {"epochs": 3, "lr": 0.05} 3' in log


def test_an_edited_priority_moves_the_run_ahead(store: Store, tmp_path: Path) -> None:
    cli("queue", "create", "q", "--config", json.dumps(CPUS), check=True)
    src = code(tmp_path)
    first, second = launch(src), launch(src)
    cli("runs", "edit", second, "-P", "critical", check=True)
    cli("agent", "-q", "q", "--burst", "-j", "1", check=True)
    a, b = store.runs.get(first), store.runs.get(second)
    assert b["started_at"] < a["started_at"]


def test_a_value_out_of_the_queues_range_is_refused_as_launch_refuses_it(
    home: Path, tmp_path: Path
) -> None:
    cli("queue", "create", "q", "--config", json.dumps(CPUS), check=True)
    src = code(tmp_path)
    run_id = launch(src)
    at_launch = one_line_error(cli("launch", "-q", "q", "-u", src, "-E", "python main.py",
                                   "-v", "cpus=9"))  # fmt: skip
    before = table_counts(home)
    at_edit = one_line_error(cli("runs", "edit", run_id, "-v", "cpus=9", "--set", "lr=1"))
    assert (
        at_edit
        == at_launch
        == ("launchctl: error: template variable cpus: value 9 is above the maximum 4\n")
    )
    unknown = one_line_error(cli("runs", "edit", run_id, "-v", "nope=1"))
    assert "nope" in unknown
    assert table_counts(home) == before
    assert cli_json("runs", "show", run_id)["spec"]["overrides"].get("run_config") is None


def test_bad_flags_are_refused_before_anything_is_read(home: Path, tmp_path: Path) -> None:
    cli("queue", "create", "q", "--config", json.dumps(CPUS), check=True)
    run_id = launch(code(tmp_path))
    before = table_counts(home)
    assert "nothing to edit" in one_line_error(cli("runs", "edit", run_id))
    assert "--set expects key=value" in one_line_error(cli("runs", "edit", run_id, "--set", "x"))
    assert "--set-var expects" in one_line_error(cli("runs", "edit", run_id, "-v", "a=b=c"))
    assert "invalid priority" in one_line_error(cli("runs", "edit", run_id, "-P", "urgent"))
    assert "does not exist" in one_line_error(cli("runs", "edit", "zzzzzzzz", "-P", "high"))
    assert table_counts(home) == before


def test_only_the_author_or_an_admin_may_edit(home: Path, tmp_path: Path) -> None:
    team()
    run_id = launch(code(tmp_path), "--set", "lr=0.1", env=BOB)
    before = table_counts(home)
    for who, user in ((CAROL, "carol"), (MALLORY, "mallory")):
        err = one_line_error(cli("runs", "edit", run_id, "--set", "lr=9", env=who))
        assert err == (
            f"launchctl: error: user '{user}' may not edit run {run_id}: only its author"
            " ('bob') or an admin of entity 'bob' or 'vision' may\n"
        )
    assert table_counts(home) == before
    cli("runs", "edit", run_id, "--set", "lr=0.2", env=BOB, check=True)
    cli("runs", "edit", run_id, "-P", "low", env=ALICE, check=True)
    assert edit_notes(run_id) == [
        "edited by bob: lr 0.1 -> 0.2",
        "edited by alice: priority medium -> low",
    ]
    # An admin's edit leaves the run its author's launch.
    assert cli_json("runs", "show", run_id)["spec"]["author"] == "bob"


def test_an_edit_is_checked_with_the_authors_role_today(home: Path, tmp_path: Path) -> None:
    """bob left the team after launching: his run can no longer be edited into a launch
    he may not make (the agent would refuse it all the same)."""
    team()
    run_id = launch(code(tmp_path), env=BOB)
    cli("team", "remove", "vision", "bob", env=ALICE, check=True)
    before = table_counts(home)
    err = one_line_error(cli("runs", "edit", run_id, "--set", "lr=1", env=ALICE))
    assert "user 'bob' is not a member of entity 'vision'" in err
    assert table_counts(home) == before


def test_an_edit_after_the_claim_is_refused(
    home: Path, tmp_path: Path, start_agent: StartAgent
) -> None:
    cli("queue", "create", "q", "--config", json.dumps(CPUS), check=True)
    gate = tmp_path / "gate"
    body = f"import os, time\nwhile not os.path.exists({str(gate)!r}):\n    time.sleep(0.05)\n"
    run_id = launch(code(tmp_path, body))
    start_agent("-q", "q")
    wait_for(lambda: cli_json("runs", "show", run_id)["state"] == "running", what="running")
    before = table_counts(home)
    err = one_line_error(cli("runs", "edit", run_id, "--set", "lr=1"))
    assert err == f"launchctl: error: run {run_id} is running: only a queued run can be edited\n"
    assert table_counts(home) == before
    gate.write_text("")
    wait_for(lambda: cli_json("runs", "show", run_id)["state"] == "finished", what="finished")
    err = one_line_error(cli("runs", "edit", run_id, "-P", "high"))
    assert "is finished: only a queued run can be edited" in err


def test_an_agent_claiming_during_edits_gets_the_old_spec_or_the_new_never_a_mix(
    store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    """Sixteen queued runs, an agent taking them one at a time from the oldest while three
    editors change two things of each (a run_config value and a template value) from the
    newest: they meet somewhere in the middle. Every run ran with both old values and its
    edit was refused, or with both new values and its edit was accepted: never one of
    each, never an accepted edit it did not run with."""
    cli("queue", "create", "q", "--config", json.dumps(CPUS), check=True)
    src = code(tmp_path)
    cli("queue", "pause", "q", check=True)
    ids = [launch(src, "--set", "lr=1", "-v", "cpus=1") for _ in range(16)]
    start_agent("-q", "q", "-j", "1")

    def edit(run_id: str) -> tuple[str, subprocess.CompletedProcess[str]]:
        proc = subprocess.run(
            [sys.executable, "-m", "launchctl", "runs", "edit", run_id, "--set", "lr=2",
             "-v", "cpus=2"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        return run_id, proc

    with ThreadPoolExecutor(3) as pool:
        edits = pool.map(edit, reversed(ids))
        cli("queue", "resume", "q", check=True)
        outcomes = dict(edits)
    wait_for(
        lambda: all(store.runs.get(i)["state"] == "finished" for i in ids),
        timeout=120,
        what="every run finished",
    )
    for run_id, proc in outcomes.items():
        seen = [ln for ln in Path(cli_json("runs", "show", run_id)["log_path"]).read_text()
                .splitlines() if ln.startswith("SEEN")]  # fmt: skip
        assert len(seen) == 1, seen
        if proc.returncode == 0:
            assert seen[0] == 'SEEN {"lr": 2} 2', (run_id, proc.stdout)
        else:
            assert "only a queued run can be edited" in proc.stderr, proc.stderr
            assert proc.stderr.count("\n") == 1
            assert seen[0] == 'SEEN {"lr": 1} 1', (run_id, proc.stderr)


def test_the_stores_edit_is_guarded_on_the_state_and_on_what_was_read(
    store: Store, tmp_path: Path
) -> None:
    """The guard itself, behind the CLI's own early check: an edit computed from a run
    read while queued is refused once the run was claimed, and one computed from a spec
    another edit changed meanwhile is refused too (two edits never undo each other)."""
    cli("queue", "create", "q", "--config", json.dumps(CPUS), check=True)
    src = code(tmp_path)
    first, second = launch(src, "--set", "lr=1"), launch(src, "--set", "lr=1")
    read = store.runs.get(second)
    cli("runs", "edit", second, "--set", "lr=3", check=True)  # another edit, meanwhile
    stale = dict(read["spec"], overrides={"run_config": {"lr": 2}})
    with pytest.raises(StateConflict, match="was changed while it was edited"):
        store.runs.edit_queued(second, expect=read, spec=stale, priority=0, message="x")
    queued = store.runs.get(first)
    cli("agent", "-q", "q", "--burst", check=True)
    with pytest.raises(StateConflict, match="is finished: only a queued run can be edited"):
        store.runs.edit_queued(first, expect=queued, spec=stale, priority=0, message="x")
    assert cli_json("runs", "show", first)["spec"]["overrides"]["run_config"] == {"lr": 1}
    assert cli_json("runs", "show", second)["spec"]["overrides"]["run_config"] == {"lr": 3}
    assert edit_notes(first) == [] and len(edit_notes(second)) == 1


def test_a_held_run_is_edited_then_released_pueue_style(store: Store, tmp_path: Path) -> None:
    """Hold it so no agent takes it half-way through your changes, edit, release."""
    cli("queue", "create", "q", "--config", json.dumps(CPUS), check=True)
    run_id = launch(code(tmp_path), "--set", "lr=1")
    cli("runs", "hold", run_id, check=True)
    cli("runs", "edit", run_id, "--set", "lr=4", "-v", "cpus=4", check=True)
    cli("runs", "release", run_id, check=True)
    cli("agent", "-q", "q", "--burst", check=True)
    log = Path(cli_json("runs", "show", run_id)["log_path"]).read_text()
    assert 'SEEN {"lr": 4} 4' in log


def test_template_values_are_refused_on_a_run_launched_with_resource_args(
    home: Path, tmp_path: Path
) -> None:
    """W&B keeps one of the two; an edit does not quietly drop what an admin launched with."""
    cli("queue", "create", "plain", check=True)
    src = code(tmp_path)
    run_id = launch(src, "-R", '{"local-process": {"env": {"CPUS": "7"}}}', queue="plain")
    before = table_counts(home)
    err = one_line_error(cli("runs", "edit", run_id, "-v", "cpus=2"))
    assert "was launched with resource_args" in err
    assert table_counts(home) == before
