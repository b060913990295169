"""Issue 12, item 13: a taken-over run's real runtime; each attempt marked in the log.

Takeovers use a real SIGKILL of the agent, as tests/test_recovery.py does.
"""

from __future__ import annotations

import datetime as dt
import re
import signal
import time
from pathlib import Path

from tests.conftest import AgentProcess, StartAgent, cli, cli_json, make_script, wait_for


def _kill(agent: AgentProcess) -> None:
    agent.signal(signal.SIGKILL)
    agent.wait(timeout=10)


def state(run_id: str) -> str:
    return str(cli_json("runs", "show", run_id)["state"])


def test_a_run_that_ended_while_no_agent_held_it_reports_its_real_runtime(
    tmp_path: Path, start_agent: StartAgent
) -> None:
    code = make_script(tmp_path / "short", "main.py", "import time\ntime.sleep(1.5)\n").parent
    run_id = cli("launch", "-q", "default", "-u", str(code), "-E", "python main.py",
                 check=True).stdout.strip()  # fmt: skip
    first = start_agent("-q", "default")
    wait_for(lambda: state(run_id) == "running", what="the run to start")
    _kill(first)
    time.sleep(5)  # the run ends after 1.5 s; nobody holds it for the rest of the gap
    cli("agent", "-q", "default", "--burst", "--resume-queues", check=True)
    run = cli_json("runs", "show", run_id)
    assert run["state"] == "finished" and run["exit_code"] == 0, run
    runtime = run["ended_at"] - run["started_at"]
    assert 1.4 <= runtime < 3.5, runtime  # not the ~6 s up to the takeover
    listed = next(r for r in cli_json("runs", "list") if r["id"] == run_id)
    span = dt.datetime.fromisoformat(listed["ended_at"]) - dt.datetime.fromisoformat(
        listed["started_at"]
    )  # ISO times to the second
    assert 1 <= span.total_seconds() <= 4, listed
    shown = cli("runs", "show", run_id, check=True).stdout
    seconds = float(re.search(r"^runtime:\s+([\d.]+)s$", shown, re.M).group(1))  # type: ignore[union-attr]
    assert 1.4 <= seconds < 3.5, shown
    notes = [e["message"] for e in run["events"] if e["from_state"] == e["to_state"]]
    assert any("before this agent took it over" in n for n in notes), notes


def test_the_log_of_a_requeued_run_marks_where_each_attempt_begins(
    tmp_path: Path, start_agent: StartAgent
) -> None:
    code = make_script(
        tmp_path / "slow", "main.py", "import time\nprint('hello', flush=True)\ntime.sleep(30)\n"
    ).parent
    run_id = cli("launch", "-q", "default", "-u", str(code), "-E", "python main.py",
                 check=True).stdout.strip()  # fmt: skip
    first = start_agent("-q", "default", "--requeue-running", "--grace", "1")
    wait_for(lambda: "hello" in cli("logs", run_id).stdout, what="the first attempt's output")
    first.signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0
    assert state(run_id) == "queued"
    # Requeued: its runtime does not grow while it waits.
    assert cli_json("runs", "show", run_id)["started_at"] is None
    second = start_agent("-q", "default")
    wait_for(lambda: cli("logs", run_id).stdout.count("hello") == 2, what="the second attempt")
    log = cli("logs", run_id, check=True).stdout
    mark = r"^--- attempt (\d+) on agent (\S+) \(attempt 1 on agent (\S+) ended: (.*)\) ---$"
    marks = re.findall(mark, log, re.M)
    assert len(marks) == 1, log
    number, now, before, why = marks[0]
    assert number == "2" and now != before and "drained for maintenance" in why
    assert log.index("hello") < log.index("--- attempt 2") < log.rindex("hello")
    assert now in second.output()
    cli("runs", "cancel", run_id, check=True)


def test_a_retried_run_s_log_marks_each_retry(tmp_path: Path) -> None:
    code = make_script(tmp_path / "bad", "main.py", "print('trying')\nraise SystemExit(3)\n")
    cli("queue", "create", "r", "--config", '{"retry": {"max": 2, "on": ["failed"]}}',
        check=True)  # fmt: skip
    run_id = cli("launch", "-q", "r", "-u", str(code.parent), "-E", "python main.py",
                 check=True).stdout.strip()  # fmt: skip
    cli("agent", "-q", "r", "--burst", check=True)
    run = cli_json("runs", "show", run_id)
    assert run["state"] == "failed" and len(run["attempts"]) == 3
    log = cli("logs", run_id, check=True).stdout
    lines = [ln for ln in log.splitlines() if ln.startswith("--- attempt")]
    assert [ln.split()[2] for ln in lines] == ["2", "3"], log
    assert "ended: attempt failed (exit code 3); retry 1 of 2)" in lines[0]
    assert log.count("trying") == 3
    assert log.index("trying") < log.index(lines[0]) < log.index(lines[1]) < log.rindex("trying")
