"""Issue 18: `runs delete` and `runs prune` keep a run whose outcome other runs wait for.

A claim reads a deleted dependency as "ended and not finished": deleting a finished run
would doom an `--after-ok` dependent that was going to run, and let an `--after-fail` one
run that was going to be failed. So such a run is refused by `runs delete` (one line
naming the runs that wait) and kept by `runs prune` (saying why), the check made in the
transaction that deletes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import StartAgent, cli, cli_json, table_counts, wait_for
from tests.step_job import create_step_job


@pytest.fixture
def job(tmp_path: Path) -> str:
    """The job 'step' (tests/step_job.py)."""
    name = create_step_job(tmp_path)
    cli("queue", "create", "parked", check=True)  # no agent serves it: its runs stay queued
    return name


def launch(queue: str, *args: str) -> str:
    proc = cli("launch", "-q", queue, "-j", "step", "--quiet", *args, check=True)
    return proc.stdout.strip()


def state(run_id: str) -> str:
    return str(cli_json("runs", "show", run_id)["state"])


def finished_runs(start_agent: StartAgent, count: int) -> list[str]:
    runs = [launch("default") for _ in range(count)]
    agent = start_agent("-q", "default", "--max-jobs", str(count))
    wait_for(lambda: all(state(r) == "finished" for r in runs), what="the runs to finish")
    agent.stop()
    return runs


def finished_run(start_agent: StartAgent) -> str:
    return finished_runs(start_agent, 1)[0]


def test_a_finished_run_an_after_ok_run_waits_for_is_not_deleted(
    job: str, start_agent: StartAgent, home: Path
) -> None:
    train, other = finished_runs(start_agent, 2)
    evaluate = launch("parked", "--after-ok", train)
    report = launch("parked", "--after", train)  # waits for its end only: that stays
    before = table_counts(home)
    for ids in ([train], [other, train[:6]]):  # named among others, or by a prefix
        refused = cli("runs", "delete", *ids, "--yes")
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines() == [
            f"launchctl: error: run {train} is waited for by {evaluate} (--after-ok; it is"
            " queued): delete it once it has ended, or cancel it"
        ]
        assert table_counts(home) == before  # the other run too: nothing is deleted
    assert state(train) == "finished"
    shown = cli("runs", "show", evaluate, check=True).stdout
    assert f"run {train} to finish (--after-ok; it is finished)" in shown
    cli("runs", "cancel", evaluate, check=True)
    done = cli("runs", "delete", train, "--yes", check=True)
    assert done.stdout.startswith("deleted 1 run")
    assert state(report) == "queued"  # an --after run never blocked it, and still waits


def test_an_after_fail_dependent_and_a_started_one_keep_it_too(
    job: str, start_agent: StartAgent, tmp_path: Path
) -> None:
    """Deleting a finished run would let an --after-fail dependent run that is due to be
    failed (no agent serves its queue yet); and a dependent that has started may still be
    requeued (preempted, its agent lost), when its claim reads its dependencies again:
    it keeps the run until it has ended."""
    first_gate, gate = tmp_path / "first-gate", tmp_path / "gate"
    train = launch("default", "--set", f"gate={first_gate}")
    cleanup = launch("parked", "--after-fail", train)
    evaluate = launch("default", "--after-ok", train, "--set", f"gate={gate}")
    start_agent("-q", "default")
    first_gate.touch()
    wait_for(lambda: state(evaluate) == "running", what="the dependent to start")
    assert state(train) == "finished" and state(cleanup) == "queued"
    refused = cli("runs", "delete", train, "--yes")
    assert refused.returncode == 1
    assert (
        f"is waited for by {cleanup} (--after-fail; it is queued),"
        f" {evaluate} (--after-ok; it is running): delete it once they have ended,"
        " or cancel them" in refused.stderr
    )
    cli("runs", "cancel", cleanup, check=True)
    refused = cli("runs", "delete", train, "--yes")
    assert refused.returncode == 1
    assert f"is waited for by {evaluate} (--after-ok; it is running)" in refused.stderr
    gate.touch()
    wait_for(lambda: state(evaluate) == "finished", what="the dependent to finish")
    cli("runs", "delete", train, "--yes", check=True)


def test_prune_keeps_a_run_others_wait_for_and_says_why(job: str, start_agent: StartAgent) -> None:
    first = launch("default")
    second = launch("default")
    agent = start_agent("-q", "default")
    wait_for(lambda: {state(first), state(second)} == {"finished"}, what="both runs")
    agent.stop()
    evaluate = launch("parked", "--after-ok", first)
    pruned = cli("runs", "prune", "--yes")
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.startswith("deleted 1 run")
    assert (
        f"skipping run {first}: run {first} is waited for by {evaluate} (--after-ok; it is"
        " queued)" in pruned.stderr
    )
    assert pruned.stderr.strip().splitlines()[-1] == (
        "kept 1 run that runs not yet ended wait for (see above)"
    )
    assert state(first) == "finished"
    assert cli("runs", "show", second).returncode != 0  # gone


RACE = """
import subprocess, sys
cmd = [sys.executable, "-m", "launchctl"]
launch = subprocess.Popen(cmd + ["launch", "-q", "parked", "-j", "step", "--quiet",
                                 "--after-ok", sys.argv[1]],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
delete = subprocess.Popen(cmd + ["runs", "delete", sys.argv[1], "--yes"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
out = launch.communicate()[0]
delete.communicate()
print(launch.returncode, delete.returncode, out.strip())
"""


def test_a_dependent_launched_while_its_dependency_is_deleted_never_loses_it(
    job: str, start_agent: StartAgent
) -> None:
    """launch --after-ok X and runs delete X at the same moment: launch checks that X
    exists in its insert's transaction, delete checks that nothing waits for X in its
    delete's, so exactly one of them goes through, whichever is first."""
    runs = [launch("default") for _ in range(4)]
    agent = start_agent("-q", "default", "--max-jobs", "4")
    wait_for(lambda: all(state(r) == "finished" for r in runs), what="the runs to finish")
    agent.stop()
    for run in runs:
        proc = subprocess.run(
            [sys.executable, "-c", RACE, run], capture_output=True, text=True, check=True,
            timeout=120,
        )  # fmt: skip
        launched, deleted, dependent = proc.stdout.split(" ", 2)
        assert (launched == "0") != (deleted == "0"), proc.stdout
        exists = cli("runs", "show", run).returncode == 0
        assert exists == (launched == "0")
        if launched == "0":
            assert state(dependent.strip()) == "queued"


def test_a_dependent_launched_after_the_delete_was_planned_keeps_its_dependency(
    job: str, start_agent: StartAgent, home: Path
) -> None:
    """`runs delete` plans, asks (a person may sit at "delete 1 run?" for minutes), then
    deletes: a dependent launched in between is seen by the delete's own transaction,
    which refuses (delete) or keeps the run (prune), and nothing is deleted."""
    from launchctl import housekeeping
    from launchctl.errors import StateConflict
    from launchctl.store import Store

    train = finished_run(start_agent)
    store = Store(home)
    try:
        plan = housekeeping.plan_delete(store, [train])
        pruning = housekeeping.plan_prune(store, older_than_s=0, states=[])
        assert [r["id"] for r in plan.runs] == [train]
        assert [r["id"] for r in pruning.runs] == [train]
        evaluate = launch("parked", "--after-ok", train)
        with pytest.raises(StateConflict, match=f"run {train} is waited for by {evaluate}"):
            housekeeping.execute(store, plan)
        assert state(train) == "finished"
        assert housekeeping.execute(store, pruning)[0] == []
        assert state(train) == "finished"
    finally:
        store.close()
