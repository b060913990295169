"""Sweeps managed (issue 15): list, pause, resume, stop, cancel, launch-sweep --resume-id,
who may do each, and a trial's launch spec going through the core as `launch -q`'s does."""

from __future__ import annotations

import json
import sqlite3
import textwrap
import time
from pathlib import Path

import pytest

from launchctl.store import Store
from launchctl.sweeps import manage
from tests.conftest import EXAMPLES, cli, cli_json, table_counts

HELLO = str(EXAMPLES / "hello")
ADMIN = {"LAUNCHCTL_USER": "alice"}
MEMBER = {"LAUNCHCTL_USER": "bob"}
OTHER_MEMBER = {"LAUNCHCTL_USER": "carol"}
OUTSIDER = {"LAUNCHCTL_USER": "eve"}
GRID = """\
job: hello
method: grid
metric: {name: loss, goal: minimize}
parameters:
  lr: {values: [0.1, 0.01, 0.001]}
  batch_size: {values: [16, 32]}
scheduler: {num_workers: 2}
"""


@pytest.fixture
def team(tmp_path: Path) -> str:
    """alice runs team 'vision' (members bob and carol) and its queue 'vision-q' with the
    job 'hello'; returns the path of a grid sweep config over that job."""
    cli("team", "create", "vision", env=ADMIN, check=True)
    cli("team", "add", "vision", "bob", env=ADMIN, check=True)
    cli("team", "add", "vision", "carol", env=ADMIN, check=True)
    cli("queue", "create", "vision-q", "--entity", "vision", "--resource", "local-process",
        env=ADMIN, check=True)  # fmt: skip
    cli("job", "create", "code", HELLO, "-E", "python train.py", "-e", "vision", env=ADMIN,
        check=True)  # fmt: skip
    path = tmp_path / "grid.yaml"
    path.write_text(GRID)
    return str(path)


def create(config: str, env: dict[str, str] = MEMBER) -> str:
    proc = cli("sweep", "create", config, "-q", "vision-q", env=env, check=True)
    return proc.stdout.strip()


def state(sweep_id: str) -> str:
    [row] = [r for r in cli_json("sweep", "list") if r["id"] == sweep_id]
    return str(row["state"])


def refused(home: Path, *args: str, env: dict[str, str], says: str) -> None:
    before = table_counts(home)
    proc = cli(*args, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("launchctl: error: ")
    assert says in proc.stderr, proc.stderr
    assert table_counts(home) == before


def test_list_shows_each_sweep_with_its_state_and_trials(team: str) -> None:
    first = create(team)
    second = create(team, ADMIN)
    rows = cli_json("sweep", "list")
    assert [r["id"] for r in rows] == [second, first]  # newest first
    assert rows[1]["author"] == "bob" and rows[0]["author"] == "alice"
    assert rows[1]["trials"] == 0 and rows[1]["entity"] == "vision"
    assert rows[1]["created_at"].endswith("+00:00")
    cli("sweep", "pause", first, env=MEMBER, check=True)
    assert [r["id"] for r in cli_json("sweep", "list", "--state", "paused")] == [first]
    text = cli("sweep", "list", check=True).stdout
    assert first in text and "loss (min)" in text and "paused" in text
    assert cli("sweep", "list", "--state", "sleeping").returncode == 1


def test_pause_resume_stop_and_the_changes_that_are_refused(team: str, home: Path) -> None:
    sweep_id = create(team)
    assert cli("sweep", "pause", sweep_id, env=MEMBER, check=True).stdout.startswith("paused")
    assert state(sweep_id) == "paused"
    refused(home, "sweep", "pause", sweep_id, env=MEMBER, says=f"{sweep_id} is already paused")
    cli("sweep", "resume", sweep_id[:5], env=MEMBER, check=True)  # a prefix is enough
    assert state(sweep_id) == "running"
    refused(home, "sweep", "resume", sweep_id, env=MEMBER, says="already running")
    cli("sweep", "stop", sweep_id, env=MEMBER, check=True)
    assert state(sweep_id) == "stopped"
    refused(home, "sweep", "pause", sweep_id, env=MEMBER, says="cannot pause sweep")
    refused(home, "sweep", "resume", sweep_id, env=MEMBER, says="cannot resume sweep")
    cli("sweep", "cancel", sweep_id, env=MEMBER, check=True)
    [row] = cli_json("sweep", "list")
    assert row["state"] == "cancelled" and row["reason"] == "cancelled by bob"
    assert row["ended_at"] is not None
    for action in ("stop", "resume", "pause"):
        refused(home, "sweep", action, sweep_id, env=MEMBER, says="it is cancelled")
    refused(home, "sweep", "cancel", sweep_id, env=MEMBER, says="is already cancelled")
    refused(home, "sweep", "stop", "zzzzzzzz", env=MEMBER, says="sweep 'zzzzzzzz' does not exist")


def test_who_may_create_and_change_a_sweep(team: str, home: Path) -> None:
    refused(home, "sweep", "create", team, "-q", "vision-q", env=OUTSIDER,
            says="user 'eve' is not a member of entity 'vision'")  # fmt: skip
    sweep_id = create(team)  # bob's
    refused(home, "sweep", "pause", sweep_id, env=OTHER_MEMBER,
            says="user 'carol' may not pause sweep")  # fmt: skip
    refused(home, "sweep", "cancel", sweep_id, env=OUTSIDER,
            says="only its author ('bob') or an admin of entity 'vision' may")  # fmt: skip
    cli("sweep", "stop", sweep_id, env=ADMIN, check=True)  # the queue's entity's admin may
    [row] = cli_json("sweep", "list")
    assert row["reason"] == "stopped by alice"


def test_a_member_may_not_give_trials_resource_args(team: str, home: Path, tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(GRID + "launch:\n  resource_args: {local-process: {env: {X: '1'}}}\n")
    refused(home, "sweep", "create", str(path), "-q", "vision-q", env=MEMBER,
            says="user 'bob' is a member of entity 'vision', not an admin")  # fmt: skip


def _trial_runs(home: Path, sweep_id: str, n: int) -> list[str]:
    """n runs queued on the sweep's queue and recorded as its trials, as its scheduler
    records them (one sweep_trials row per run)."""
    run_ids = []
    for i in range(n):
        run = json.loads(cli("launch", "-q", "vision-q", "-j", "hello", "--set", f"lr={i}",
                             "--json", env=MEMBER, check=True).stdout)  # fmt: skip
        run_ids.append(run["id"])
    conn = sqlite3.connect(home / "launchctl.db")
    with conn:
        conn.executemany(
            "INSERT INTO sweep_trials (sweep_id, seq, run_id, params, created_at)"
            " VALUES (?, ?, ?, '{}', ?)",
            [(sweep_id, i, rid, time.time()) for i, rid in enumerate(run_ids)],
        )
    conn.close()
    return run_ids


def test_cancel_also_cancels_the_sweep_s_queued_runs(team: str, home: Path) -> None:
    sweep_id = create(team)
    trials = _trial_runs(home, sweep_id, 3)
    other = json.loads(cli("launch", "-q", "vision-q", "-j", "hello", "--json", env=MEMBER,
                           check=True).stdout)["id"]  # fmt: skip
    proc = cli("sweep", "cancel", sweep_id, env=ADMIN, check=True)
    assert proc.stdout.strip() == f"cancelled sweep {sweep_id} and 3 of its runs"
    for run_id in trials:
        run = cli_json("runs", "show", run_id)
        assert run["state"] == "stopped" and run["reason"] == "cancelled"
    assert cli_json("runs", "show", other)["state"] == "queued"  # not the sweep's
    assert [r["trials"] for r in cli_json("sweep", "list")] == [3]


def test_launch_sweep_resume_id(team: str, home: Path) -> None:
    sweep_id = create(team)
    refused(home, "launch-sweep", "--resume-id", sweep_id, env=MEMBER,
            says=f"cannot resume sweep {sweep_id}: it is already running")  # fmt: skip
    cli("sweep", "stop", sweep_id, env=MEMBER, check=True)
    refused(home, "launch-sweep", "--resume_id", sweep_id, env=OTHER_MEMBER, says="may not resume")
    refused(home, "launch-sweep", "-r", sweep_id, "-q", "other", env=MEMBER,
            says="runs on queue vision-q, not other")  # fmt: skip
    proc = cli("launch-sweep", team, "--resume-id", sweep_id, env=MEMBER, check=True)
    assert proc.stdout.strip() == sweep_id
    assert "ignoring provided config" in proc.stderr and f"resumed sweep {sweep_id}" in proc.stderr
    assert state(sweep_id) == "running"
    cli("sweep", "cancel", sweep_id, env=MEMBER, check=True)
    refused(home, "launch-sweep", "-r", sweep_id, env=MEMBER, says="it is cancelled")


def test_a_trial_s_launch_spec_is_queued_by_the_core_as_launch_q_queues_it(
    team: str, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cmd.yaml"
    path.write_text(
        textwrap.dedent("""\
        job: hello
        method: random
        command: [python, train.py, '${args}']
        parameters:
          lr: {min: 0.0001, max: 0.1}
          name: {value: '$(touch /tmp/pwned)'}
        launch: {priority: high}
    """)
    )
    sweep_id = create(str(path))
    from launchctl.launch import submit

    monkeypatch.setenv("LAUNCHCTL_USER", "bob")  # the trial is launched as its sweep's author
    store = Store(home)
    try:
        sweep = manage.get(store, sweep_id)
        params = {"lr": 0.05, "name": "$(touch /tmp/pwned)"}
        spec = manage.trial_spec(sweep, params)
        run = submit(store, spec)
    finally:
        store.close()
    shown = cli_json("runs", "show", run["id"])
    assert shown["queue_name"] == "vision-q" and shown["entity"] == "vision"
    assert shown["spec"]["overrides"]["run_config"] == params
    assert shown["spec"]["overrides"]["entry_point"] == [
        "python", "train.py", "--lr=0.05", "--name=$(touch /tmp/pwned)"]  # fmt: skip
    assert shown["spec"]["job"] == "vision/hello:v0" and shown["spec"]["priority"] == "high"


def test_random_and_bayes_without_optuna_are_refused_at_once_and_say_how_to_install(
    team: str, home: Path, tmp_path: Path
) -> None:
    """The README's one-line install has no optuna (it is the sweeps extra): a random or
    bayes sweep is refused in one line before anything is stored, not accepted to sit
    with no trials. A grid needs no optuna. A sweep made while optuna was there, and run
    after it went, says so in one line (no internal error)."""
    blocker = tmp_path / "no-optuna"
    blocker.mkdir()
    # Python imports the first sitecustomize on its path: optuna cannot be found there.
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['optuna'] = None\n")
    without = {**MEMBER, "PYTHONPATH": str(blocker)}
    path = Path(team)
    for method in ("random", "bayes"):
        path.write_text(GRID.replace("method: grid", f"method: {method}"))
        before = table_counts(home)
        proc = cli("sweep", "create", team, "-q", "vision-q", env=without)
        assert proc.returncode == 1, proc.stdout
        assert proc.stderr.splitlines() == [
            f"launchctl: error: sweep config: method {method} searches with optuna, which is not"
            " installed for launchctl's Python: pip install 'launchctl[sweeps]' (or pip install"
            " optuna)"
        ]
        assert table_counts(home) == before
    path.write_text(GRID)
    assert cli("sweep", "create", team, "-q", "vision-q", env=without).returncode == 0
    path.write_text(GRID.replace("method: grid", "method: random"))
    made = create(team)  # optuna is installed for the tests
    proc = cli("sweep", "run", made, env=without, timeout=60)
    assert proc.returncode == 1
    [line] = proc.stderr.splitlines()
    assert "need optuna, which is not installed" in line and "internal error" not in line
    assert state(made) == "running"
