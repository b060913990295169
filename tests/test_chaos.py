"""Chaos: SIGKILL the agent at random moments while it runs processes and containers.

After every kill a new agent starts, ends the dead agent's leases, adopts what still
runs and records what ended meanwhile. At the end, counted from the events and from what
the runs themselves wrote: every run has exactly one terminal state, none ran twice,
and none was lost.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from launchctl.launch import LaunchRequest, prepare_spec, submit
from launchctl.store import Store
from tests.conftest import BUSYBOX, cli, make_script

TRIALS = int(os.environ.get("LAUNCHCTL_CHAOS_TRIALS", "30"))
PROCESS_RUNS = 40
CONTAINER_RUNS = 10


def _agent(home: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "launchctl", "agent", "-q", "default", "-q", "box", "-j", "4",
         "--resume-queues"],
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
        env={**os.environ, "LAUNCHCTL_HOME": str(home)},
    )  # fmt: skip


def _ledger(path: Path) -> dict[str, list[str]]:
    marks: dict[str, list[str]] = {}
    if path.exists():
        for line in path.read_text().split("\n"):
            if line.strip():
                kind, run_id = line.split()[:2]
                marks.setdefault(run_id, []).append(kind)
    return marks


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_no_run_and_runs_none_twice(
    store: Store, home: Path, tmp_path: Path, docker: Any
) -> None:
    rng = random.Random(int(os.environ.get("LAUNCHCTL_CHAOS_SEED", "7")))
    ledger_dir = tmp_path / "ledger"
    ledger_dir.mkdir()
    ledger_dir.chmod(0o777)
    ledger = ledger_dir / "marks"
    code = make_script(
        tmp_path / "job", "run.sh",
        f'echo "start $LAUNCHCTL_RUN_ID" >> {ledger}\n'
        'sleep "$(echo "$WANDB_CONFIG" | sed -e \'s/.*"s": *\\([0-9.]*\\).*/\\1/\')"\n'
        f'echo "end $LAUNCHCTL_RUN_ID" >> {ledger}\n',
    ).parent  # fmt: skip
    cli("job", "create", "code", str(code), "-E", "sh run.sh", "-n", "chaos", check=True)
    box = {"resource_args": {"local-container": {"volume": f"{ledger_dir}:/ledger"}}}
    cli("queue", "create", "box", "-r", "local-container", "--config", json.dumps(box), check=True)
    ids = set()
    for _ in range(PROCESS_RUNS):
        spec = prepare_spec(LaunchRequest(queue="default", job="chaos",
                                          sets=[f"s={rng.uniform(0.1, 1.2):.2f}"]))  # fmt: skip
        ids.add(submit(store, spec)["id"])
    for _ in range(CONTAINER_RUNS):
        sleep = f"{rng.uniform(0.1, 1.2):.2f}"
        command = (
            "sh -c 'echo start $LAUNCHCTL_RUN_ID >> /ledger/marks; "
            f"sleep {sleep}; echo end $LAUNCHCTL_RUN_ID >> /ledger/marks'"
        )
        spec = prepare_spec(LaunchRequest(queue="box", docker_image=BUSYBOX, entry_point=command))
        ids.add(submit(store, spec)["id"])

    log = tmp_path / "agents.log"
    kills = 0
    for _ in range(TRIALS):
        agent = _agent(home, log)
        time.sleep(rng.uniform(0.2, 1.5))
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        kills += 1
    # A last agent drains what is left, adopting runs the last kill left behind.
    final = subprocess.run(
        [sys.executable, "-m", "launchctl", "agent", "-q", "default", "-q", "box", "-j", "4",
         "--resume-queues", "--burst"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "LAUNCHCTL_HOME": str(home)},
    )  # fmt: skip
    assert final.returncode == 0, final.stderr

    runs = {r["id"]: r for r in store.runs.select(limit=None)}
    events = store.runs.events()
    terminal = Counter(
        e["run_id"] for e in events
        if e["to_state"] in ("finished", "failed", "stopped") and e["from_state"] != e["to_state"]
    )  # fmt: skip
    marks = _ledger(ledger)
    lost = [i for i in ids if runs[i]["state"] not in ("finished", "failed", "stopped")]
    duplicated = [i for i in ids if marks.get(i, []).count("start") > 1]
    report = {
        "trials": kills, "runs": len(ids), "lost": len(lost), "duplicated": len(duplicated),
        "finished": sum(r["state"] == "finished" for r in runs.values()),
        "takeovers": sum(1 for e in events if (e["message"] or "").startswith("taken over")),
    }  # fmt: skip
    print("chaos:", json.dumps(report))
    if os.environ.get("LAUNCHCTL_CHAOS_REPORT"):
        Path(os.environ["LAUNCHCTL_CHAOS_REPORT"]).write_text(json.dumps(report) + "\n")
    assert not lost, f"runs left without a terminal state: {lost}"
    assert set(terminal) == ids and set(terminal.values()) == {1}, "one terminal state each"
    assert not duplicated, f"runs that started twice: {duplicated}"
    # Every run ran to its end: each process and container was adopted or recorded truthfully.
    unfinished = {i: (runs[i]["state"], runs[i]["reason"]) for i in ids
                  if runs[i]["state"] != "finished"}  # fmt: skip
    assert not unfinished, unfinished
    assert all(marks.get(i) == ["start", "end"] for i in ids)
