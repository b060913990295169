"""Issue 18: `launch --delay` and `launch --at`: queued, but not claimable before then."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest

from tests.conftest import StartAgent, cli, cli_json, make_script, table_counts, wait_for


@pytest.fixture
def job(tmp_path: Path) -> str:
    """The job 'hello': with ``--set mark=PATH`` it writes PATH when it runs."""
    code = make_script(
        tmp_path / "hello",
        "main.py",
        "import json, os\n"
        "cfg = json.loads(os.environ['WANDB_CONFIG'])\n"
        "if cfg.get('mark'):\n"
        "    open(cfg['mark'], 'w').close()\n",
    ).parent
    cli("job", "create", "code", str(code), "-E", "python main.py", "-n", "hello", check=True)
    return "hello"


def launch(*args: str) -> str:
    return cli(
        "launch", "-q", "default", "-j", "hello", "--quiet", *args, check=True
    ).stdout.strip()


def show(run_id: str) -> dict[str, object]:
    return dict(cli_json("runs", "show", run_id))


def claimed_at(run: dict[str, object]) -> float:
    events = run["events"]
    assert isinstance(events, list)
    return float(next(e["at"] for e in events if e["to_state"] == "claimed"))


def test_a_delayed_run_starts_when_its_delay_ends_and_not_before(
    job: str, start_agent: StartAgent, tmp_path: Path
) -> None:
    """An agent sleeps until the delay ends: its wake-up is the delay's end, as for a
    retry backoff. Two agents serve the queue, each with a fallback poll of 120 s, and the
    test waits for the run's own mark (a file), not on the store (a read of the store
    could wake the agents' watch): a run that started within the wait was woken by its
    delay."""
    agents = [start_agent("-q", "default", "--poll", "120") for _ in range(2)]
    for agent in agents:  # two of them: neither claims it early, only one claims it
        wait_for(agent.output, what="the agent to start")
    before = time.time()
    mark = tmp_path / "delayed.mark"
    delayed = launch("--delay", "3s", "--set", f"mark={mark}")
    eligible = float(show(delayed)["not_before"])  # type: ignore[arg-type]
    assert before + 3 <= eligible <= time.time() + 3
    first = tmp_path / "now.mark"
    now = launch("--set", f"mark={first}")  # launched after it, claimed before it
    wait_for(first.exists, what="the undelayed run")
    wait_for(mark.exists, timeout=60, what="the delayed run")
    wait_for(lambda: show(delayed)["state"] == "finished", what="the delayed run's end")
    run = show(delayed)
    assert claimed_at(run) >= eligible  # never claimed early
    claims = [e for e in run["events"] if e["to_state"] == "claimed"]  # type: ignore[attr-defined]
    assert len(claims) == 1
    assert claimed_at(run) > claimed_at(show(now))
    assert "waits for" not in cli("runs", "show", delayed, check=True).stdout


def test_at_a_time_of_day_means_the_next_such_time(job: str) -> None:
    soon = dt.datetime.now() + dt.timedelta(minutes=2)
    run_id = launch("--at", soon.strftime("%H:%M"))
    eligible = float(show(run_id)["not_before"])  # type: ignore[arg-type]
    wanted = soon.replace(second=0, microsecond=0)
    assert eligible == wanted.timestamp()
    past = dt.datetime.now() - dt.timedelta(minutes=2)
    run_id = launch("--at", past.strftime("%H:%M"))
    eligible = float(show(run_id)["not_before"])  # type: ignore[arg-type]
    assert eligible == (past.replace(second=0, microsecond=0) + dt.timedelta(days=1)).timestamp()


def test_at_a_date_and_time(job: str) -> None:
    when = (dt.datetime.now() + dt.timedelta(days=3)).replace(microsecond=0)
    run_id = launch("--at", when.isoformat(timespec="minutes"))
    row = next(r for r in cli_json("runs", "list") if r["id"] == run_id)
    assert row["state"] == "queued"
    assert dt.datetime.fromisoformat(row["eligible_at"]) == when.replace(second=0).astimezone()
    shown = when.replace(second=0).strftime("%Y-%m-%d %H:%M:%S")
    assert f"queued (at {shown})" in cli("runs", "list", check=True).stdout
    assert "waits for:  not before " in cli("runs", "show", run_id, check=True).stdout
    assert "launched with --delay or --at" in cli("logs", run_id).stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--delay", "2x"], "invalid --delay '2x': expected a number and a unit"),
        (["--delay", "-5s"], "invalid --delay '-5s'"),
        (["--delay", "400d"], "at most 366 days"),
        (["--at", "2020-01-01T02:00"], "--at '2020-01-01T02:00' is in the past"),
        (["--at", "25:00"], "invalid --at '25:00': no such time of day"),
        (["--at", "tomorrow"], "invalid --at 'tomorrow': expected an ISO date and time"),
        (["--at", "2099-01-01"], "give a time too, e.g. 2099-01-01T02:00"),
        (["--delay", "1h", "--at", "02:00"], "cannot use both --delay and --at"),
    ],
)
def test_a_bad_time_is_refused_in_one_line_with_nothing_written(
    job: str, home: Path, args: list[str], message: str
) -> None:
    before = table_counts(home)
    proc = cli("launch", "-q", "default", "-j", "hello", *args)
    assert proc.returncode == 1, proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""
    assert table_counts(home) == before


def test_a_delay_needs_a_queue(job: str, home: Path) -> None:
    before = table_counts(home)
    proc = cli("launch", "-j", "hello", "--delay", "1m")
    assert proc.returncode == 1
    assert "--delay/--at needs a queue (-q): a direct launch starts at once" in proc.stderr
    proc = cli("launch", "-j", "hello", "--delay", "1m", "--remote-queue", "e/p/q")
    assert proc.returncode == 1
    assert "--delay/--at goes with a local queue (-q), not --remote-queue" in proc.stderr
    assert table_counts(home) == before


def test_quiet_prints_the_id_alone(job: str) -> None:
    """Without --quiet a launch into an unserved queue adds a hint on stderr; with it,
    stdout is the id and stderr is empty, so `a=$(launchctl launch ... --quiet)` chains."""
    loud = cli("launch", "-q", "default", "-j", "hello", check=True)
    assert "no agent is serving queue default" in loud.stderr
    quiet = cli("launch", "-q", "default", "-j", "hello", "--quiet", check=True)
    assert quiet.stderr == "" and len(quiet.stdout.split()) == 1
    assert show(quiet.stdout.strip())["state"] == "queued"
    for other in ("--wait", "--json"):
        proc = cli("launch", "-q", "default", "-j", "hello", "--quiet", other)
        assert proc.returncode == 1 and f"cannot use both --quiet and {other}" in proc.stderr
    proc = cli("launch", "-j", "hello", "--quiet")
    assert proc.returncode == 1 and "--quiet goes with a queued launch (-q)" in proc.stderr
