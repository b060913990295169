"""Issue 18: `launch --after/--after-ok/--after-fail`: a run waits for other runs to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import StartAgent, cli, cli_json, table_counts, wait_for
from tests.step_job import create_step_job


@pytest.fixture
def job(tmp_path: Path) -> str:
    """The job 'step' (tests/step_job.py)."""
    return create_step_job(tmp_path)


def launch(*args: str, env: dict[str, str] | None = None) -> str:
    proc = cli("launch", "-q", "default", "-j", "step", "--quiet", *args, env=env, check=True)
    return proc.stdout.strip()


def show(run_id: str) -> dict[str, object]:
    return dict(cli_json("runs", "show", run_id))


def state(run_id: str) -> str:
    return str(show(run_id)["state"])


def moves(run: dict[str, object], to: str) -> list[float]:
    events = run["events"]
    assert isinstance(events, list)
    return [float(e["at"]) for e in events if e["to_state"] == to and e["from_state"] != to]


def test_a_chain_under_two_agents_starts_each_run_after_its_dependency_once(
    job: str, start_agent: StartAgent, tmp_path: Path
) -> None:
    """train -> eval (--after-ok) -> report (--after), served by two agents with free
    slots: neither starts a run before its dependency ended, and no run starts twice."""
    gate = tmp_path / "gate"
    train = launch("--set", f"gate={gate}")
    evaluate = launch("--after-ok", train)
    report = launch("--after", evaluate)
    shown = cli("runs", "show", evaluate, check=True).stdout
    assert f"waits for:  run {train} to finish (--after-ok; it is queued)" in shown
    row = next(r for r in cli_json("runs", "list") if r["id"] == report)
    assert row["after"] == [{"run": evaluate, "kind": "any", "state": "queued"}]
    assert f"queued (after {evaluate})" in cli("runs", "list", check=True).stdout
    waiting = cli("logs", evaluate).stderr
    assert f"has not started: waiting for run {train} to finish (--after-ok" in waiting
    for _ in range(2):
        start_agent("-q", "default", "--max-jobs", "3")
    wait_for(lambda: state(train) == "running", what="train to start")
    # Both agents have free slots and have seen train start: the others still wait.
    assert state(evaluate) == "queued" and state(report) == "queued"
    gate.touch()
    wait_for(lambda: state(report) == "finished", what="the chain to finish")
    runs = {r: show(r) for r in (train, evaluate, report)}
    for run in runs.values():
        assert len(moves(run, "claimed")) == 1 and run["state"] == "finished"
    assert moves(runs[evaluate], "claimed")[0] >= float(runs[train]["ended_at"])  # type: ignore[arg-type]
    assert moves(runs[report], "claimed")[0] >= float(runs[evaluate]["ended_at"])  # type: ignore[arg-type]


def test_after_ok_on_a_run_that_fails_ends_failed_naming_it(
    job: str, start_agent: StartAgent, tmp_path: Path
) -> None:
    """Served by two agents: the dependent run ends failed once, at stage agent, never
    waiting forever; --after (any end) and --after-fail runs go on."""
    gate = tmp_path / "gate"
    train = launch("--set", f"gate={gate}", "--set", "exit=3")
    evaluate = launch("--after-ok", train)
    anyway = launch("--after", train)
    on_fail = launch("--after-fail", train)
    for _ in range(2):
        start_agent("-q", "default", "--max-jobs", "4")
    wait_for(lambda: state(train) == "running", what="train to start")
    gate.touch()
    wait_for(lambda: state(evaluate) == "failed", what="eval to fail")
    run = show(evaluate)
    assert run["stage"] == "agent"
    assert run["reason"] == f"dependency {train} ended failed (launched with --after-ok)"
    assert len(moves(run, "failed")) == 1 and run["started_at"] is None
    wait_for(lambda: state(anyway) == "finished" and state(on_fail) == "finished",
             what="the --after and --after-fail runs")  # fmt: skip


def test_after_fail_on_a_run_that_finishes_ends_failed(job: str, start_agent: StartAgent) -> None:
    train = launch()
    cleanup = launch("--after-fail", train)
    start_agent("-q", "default")
    wait_for(lambda: state(cleanup) == "failed", what="the --after-fail run to end")
    assert show(cleanup)["reason"] == (
        f"dependencies {train} all finished (launched with --after-fail)"
    )
    assert state(train) == "finished"


def test_a_dependency_may_be_in_another_queue_and_ended_already(
    job: str, start_agent: StartAgent
) -> None:
    cli("queue", "create", "other", check=True)
    done = cli("launch", "-q", "other", "-j", "step", "--quiet", check=True).stdout.strip()
    start_agent("-q", "other")
    wait_for(lambda: state(done) == "finished", what="the first run")
    after = launch("--after-ok", done[:5])  # a unique prefix is enough
    assert show(after)["after"] == [{"run": done, "kind": "ok", "state": "finished"}]
    start_agent("-q", "default")
    wait_for(lambda: state(after) == "finished", what="the dependent run")


def test_a_dependency_that_cannot_hold_or_does_not_exist_is_refused(
    job: str, home: Path, start_agent: StartAgent
) -> None:
    failed = launch("--set", "exit=1")
    fine = launch()
    start_agent("-q", "default")
    wait_for(lambda: state(failed) == "failed" and state(fine) == "finished", what="two runs")
    before = table_counts(home)
    for args, message in [
        (["--after", "nosuchrun"], "run 'nosuchrun' does not exist"),
        (["--after-ok", failed], f"run {failed} already ended failed: --after-ok can never hold"),
        (["--after-fail", fine], f"run {fine} already finished: --after-fail can never hold"),
        (["--after", fine, "--after-ok", fine], f"run {fine} is named by both --after and"),
        (["--after", "a,,b"], "invalid --after 'a,,b': expected run ids separated by commas"),
        (["--after", fine, "--remote-queue", "e/p/q"], "--after goes with a local queue"),
        # The key that carries the flags to build_run cannot be typed in a launch spec
        # (nor arrive in one popped from a W&B queue, which is read as -c is).
        (["-c", '{"_workflow": {"after": [["x", "any"]]}}'], "unknown key '_workflow'"),
    ]:
        proc = cli("launch", "-q", "default", "-j", "step", *args)
        assert proc.returncode == 1, proc.stderr
        assert message in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    proc = cli("launch", "-j", "step", "--after", fine)
    assert proc.returncode == 1 and "--after needs a queue (-q)" in proc.stderr
    assert table_counts(home) == before


def test_another_team_may_not_wait_on_a_run_it_cannot_see(job: str, home: Path) -> None:
    """eve is in no team of alice's: she may not chain her run after one of team vision's
    (it would tell her how that run ended, and when); bob, a member, may."""
    alice, bob, eve = ({"LAUNCHCTL_USER": u} for u in ("alice", "bob", "eve"))
    cli("team", "create", "vision", env=alice, check=True)
    cli("team", "add", "vision", "bob", env=alice, check=True)
    cli("queue", "create", "vq", "--entity", "vision", env=alice, check=True)
    cli("job", "create", "code", str(home.parent / "step"), "-E", "python main.py", "-n", "step",
        "-e", "vision", env=alice, check=True)  # fmt: skip
    secret = cli("launch", "-q", "vq", "-j", "vision/step", "--quiet", env=alice, check=True)
    secret_id = secret.stdout.strip()
    before = table_counts(home)
    proc = cli("launch", "-q", "default", "-j", "step", "--after", secret_id, env=eve)
    assert proc.returncode == 1
    assert f"user 'eve' may not wait for run {secret_id}" in proc.stderr
    assert table_counts(home) == before
    cli("launch", "-q", "vq", "-j", "vision/step", "--after", secret_id, env=bob, check=True)


def test_an_agent_wakes_when_a_dependency_on_another_agent_ends(
    job: str, start_agent: StartAgent, tmp_path: Path
) -> None:
    """The dependency runs in another queue under another agent; the dependent's agent
    (fallback poll 120 s) starts it once the dependency ends: the end is a store write,
    and its watch of the store wakes it. The test waits on the run's mark (a file), not
    on the store, whose reads could wake the agent too."""
    cli("queue", "create", "other", check=True)
    gate = tmp_path / "gate"
    first = cli("launch", "-q", "other", "-j", "step", "--quiet", "--set", f"gate={gate}",
                check=True).stdout.strip()  # fmt: skip
    mark = tmp_path / "then.mark"
    then = launch("--after-ok", first, "--set", f"mark={mark}")
    start_agent("-q", "other", "--poll", "120")
    waiter = start_agent("-q", "default", "--poll", "120")
    wait_for(lambda: state(first) == "running" and waiter.output(), what="both agents")
    assert state(then) == "queued"
    gate.touch()
    wait_for(mark.exists, timeout=60, what="the dependent run")
    wait_for(lambda: state(then) == "finished", what="the dependent run's end")
    ended = float(show(first)["ended_at"])  # type: ignore[arg-type]
    assert moves(show(then), "claimed")[0] >= ended
