"""The sweep scheduler (issue 15), driven as a user drives it: a job, a queue, a W&B
sweep config given to ``launch-sweep``, and real ``launchctl agent`` processes that run
the trials and schedule the sweep. What happened is read back from the store's event
log and the sweep's trials."""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import StartAgent, cli, make_script, wait_for

from launchctl.store import Store
from launchctl.sweeps import scheduler

# A training script as W&B's sweeps run them: its parameters in WANDB_CONFIG, its metric
# written where launchctl reads it. ``lr`` -1 reports nothing; ``lr`` -2 exits 1.
TRAIN = """
import json, os, sys, time
cfg = json.loads(os.environ["WANDB_CONFIG"])
time.sleep(float(os.environ.get("SLEEP", cfg.get("sleep", 0.4))))
if cfg["lr"] == -2:
    sys.exit(1)
if cfg["lr"] != -1:
    loss = (cfg["lr"] - 0.01) ** 2 + cfg.get("bs", 0) / 1000
    with open(os.environ["LAUNCHCTL_METRICS_FILE"], "a") as f:
        f.write(json.dumps({"loss": loss, "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
                            "sweep": os.environ.get("WANDB_SWEEP_ID")}) + "\\n")
"""

GRID_12 = {
    "method": "grid",
    "job": "train",
    "metric": {"name": "loss", "goal": "minimize"},
    "parameters": {
        "lr": {"values": [0.1, 0.01, 0.001]},
        "bs": {"values": [16, 32, 64, 128]},
    },
    "scheduler": {"num_workers": 3},
}


def setup_queue(tmp_path: Path, name: str = "local", config: str | None = None) -> None:
    make_script(tmp_path / "code", "train.py", TRAIN)
    cli("job", "create", "code", str(tmp_path / "code"), "-E", "python train.py", "-n", "train",
        check=True)  # fmt: skip
    extra = ["--config", config] if config else []
    cli("queue", "create", name, "--resource", "local-process", *extra, check=True)


def launch_sweep(tmp_path: Path, config: dict[str, Any], queue: str = "local") -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = cli("launch-sweep", str(path), "-q", queue, check=True)
    return proc.stdout.split()[0]


def sweep_row(home: Path, sweep_id: str) -> dict[str, Any]:
    with sqlite3.connect(home / "launchctl.db") as db:
        db.row_factory = sqlite3.Row
        return dict(db.execute("SELECT * FROM sweeps WHERE id = ?", [sweep_id]).fetchone())


def trials(home: Path, sweep_id: str) -> list[dict[str, Any]]:
    store = Store(home)
    try:
        return scheduler.trials(store, sweep_id)
    finally:
        store.close()


def intervals(home: Path, run_ids: list[str]) -> dict[str, tuple[float, float]]:
    """Each run's time in flight, from the event log: from its launch (queued) to the
    event that ended it."""
    marks = ", ".join("?" for _ in run_ids)
    with sqlite3.connect(home / "launchctl.db") as db:
        rows = db.execute(
            f"SELECT run_id, at, to_state FROM events WHERE run_id IN ({marks}) ORDER BY id",
            run_ids,
        ).fetchall()
    start: dict[str, float] = {}
    end: dict[str, float] = {}
    for run_id, at, to_state in rows:
        start.setdefault(run_id, at)
        if to_state in ("finished", "failed", "stopped"):
            end[run_id] = at
    return {r: (start[r], end[r]) for r in run_ids}


def most_at_once(spans: dict[str, tuple[float, float]]) -> int:
    points = sorted(
        [(s, 1) for s, _ in spans.values()] + [(e, -1) for _, e in spans.values()],
        key=lambda p: (p[0], p[1]),  # an end before a start at the same instant
    )
    now = peak = 0
    for _, step in points:
        now += step
        peak = max(peak, now)
    return peak


def starts(home: Path, run_id: str) -> int:
    """How many times the run was started (claimed and set going); an adopted run's
    later events (a lease ended, taken over) do not start it again."""
    with sqlite3.connect(home / "launchctl.db") as db:
        row = db.execute(
            "SELECT COUNT(*) FROM events WHERE run_id = ? AND from_state = 'claimed'"
            " AND to_state = 'starting'",
            [run_id],
        ).fetchone()
    return int(row[0])


def finished(home: Path, sweep_id: str) -> bool:
    return sweep_row(home, sweep_id)["state"] == "finished"


def test_a_grid_of_12_with_3_workers(home: Path, tmp_path: Path, start_agent: StartAgent) -> None:
    setup_queue(tmp_path)
    sweep_id = launch_sweep(tmp_path, GRID_12)
    agent = start_agent("-q", "local", "-j", "8")
    wait_for(lambda: finished(home, sweep_id), timeout=120, what="the sweep to finish")
    done = trials(home, sweep_id)
    assert [t["seq"] for t in done] == list(range(12))
    assert len({json.dumps(t["params"], sort_keys=True) for t in done}) == 12
    assert all(t["outcome"] == "ok" and t["run_state"] == "finished" for t in done), done
    assert all(t["metric_source"] == "metrics-file" for t in done)
    # Never more than 3 in flight though the agent had 8 slots, and 3 at a time indeed.
    spans = intervals(home, [t["run_id"] for t in done])
    assert most_at_once(spans) == 3
    best = min(done, key=lambda t: t["metric"])
    assert best["params"] == {"lr": 0.01, "bs": 16}
    row = sweep_row(home, sweep_id)
    assert row["reason"] == "the search is exhausted"
    assert row["scheduler_agent"] is None  # given back with the end
    assert "sweep" in agent.output() and "finished" in agent.output()


def test_each_trial_gets_wandb_sweep_id_and_its_run_config(
    home: Path, tmp_path: Path, start_agent: StartAgent
) -> None:
    setup_queue(tmp_path)
    config = {**GRID_12, "parameters": {"lr": {"values": [0.1, 0.01]}, "bs": {"value": 8}}}
    sweep_id = launch_sweep(tmp_path, config)
    start_agent("-q", "local")
    wait_for(lambda: finished(home, sweep_id), timeout=60, what="the sweep to finish")
    store = Store(home)
    try:
        for t in trials(home, sweep_id):
            run = store.runs.get(t["run_id"])
            assert run["spec"]["overrides"]["run_config"] == t["params"]
            assert run["spec"]["sweep_id"] == sweep_id
            line = json.loads((store.run_dir(run["id"]) / "metrics.jsonl").read_text())
            assert line["sweep"] == sweep_id
    finally:
        store.close()


def test_random_search_stops_at_run_cap(
    home: Path, tmp_path: Path, start_agent: StartAgent
) -> None:
    setup_queue(tmp_path)
    config = {
        "method": "random",
        "job": "train",
        "metric": {"name": "loss", "goal": "minimize"},
        "parameters": {"lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 0.1},
                       "sleep": {"value": 0.1}},
        "run_cap": 5,
        "scheduler": {"num_workers": 2},
    }  # fmt: skip
    sweep_id = launch_sweep(tmp_path, config)
    start_agent("-q", "local", "-j", "4")
    wait_for(lambda: finished(home, sweep_id), timeout=60, what="the sweep to finish")
    done = trials(home, sweep_id)
    assert len(done) == 5
    assert all(1e-4 <= t["params"]["lr"] <= 0.1 and t["outcome"] == "ok" for t in done)
    assert sweep_row(home, sweep_id)["reason"] == "run_cap 5 reached"
    assert most_at_once(intervals(home, [t["run_id"] for t in done])) <= 2


def test_a_run_that_reports_nothing_or_fails_is_a_failed_trial(
    home: Path, tmp_path: Path, start_agent: StartAgent
) -> None:
    setup_queue(tmp_path)
    config = {**GRID_12, "parameters": {"lr": {"values": [0.01, -1, -2]}, "sleep": {"value": 0}}}
    sweep_id = launch_sweep(tmp_path, config)
    start_agent("-q", "local")
    wait_for(lambda: finished(home, sweep_id), timeout=60, what="the sweep to finish")
    by_lr = {t["params"]["lr"]: t for t in trials(home, sweep_id)}
    assert by_lr[0.01]["outcome"] == "ok"
    assert by_lr[-1]["outcome"].startswith("failed: ") and by_lr[-1]["metric"] is None
    assert "loss" in by_lr[-1]["outcome"]  # says which metric it did not report
    assert by_lr[-2]["outcome"].startswith("failed: its run failed")
    assert by_lr[-2]["metric"] is None


def test_two_agents_on_one_queue_schedule_a_sweep_once(
    home: Path, tmp_path: Path, start_agent: StartAgent
) -> None:
    """The sweep's lease: two agents serve its queue, one schedules it at a time; never
    more than num_workers trials in flight, and no trial twice."""
    setup_queue(tmp_path)
    config = {**GRID_12, "parameters": {"lr": {"values": [0.1, 0.01, 0.001]},
                                        "bs": {"values": [1, 2]}, "sleep": {"value": 0.3}},
              "scheduler": {"num_workers": 2}}  # fmt: skip
    sweep_id = launch_sweep(tmp_path, config)
    start_agent("-q", "local", "-j", "4")
    start_agent("-q", "local", "-j", "4")
    wait_for(lambda: finished(home, sweep_id), timeout=90, what="the sweep to finish")
    done = trials(home, sweep_id)
    assert len(done) == 6
    assert len({json.dumps(t["params"], sort_keys=True) for t in done}) == 6
    assert most_at_once(intervals(home, [t["run_id"] for t in done])) == 2


def test_sigkill_the_agent_mid_sweep_and_restart_it(
    home: Path, tmp_path: Path, start_agent: StartAgent
) -> None:
    setup_queue(tmp_path)
    config = {**GRID_12, "parameters": {**GRID_12["parameters"], "sleep": {"value": 0.8}}}
    sweep_id = launch_sweep(tmp_path, config)
    first = start_agent("-q", "local", "-j", "8")
    wait_for(lambda: len(trials(home, sweep_id)) >= 5, timeout=60, what="5 trials")
    first.signal(signal.SIGKILL)
    first.wait()
    before = trials(home, sweep_id)
    assert len(before) < 12 and sweep_row(home, sweep_id)["state"] == "running"
    # The killed agent's lease is still valid for a while: the restarted agent sees its
    # process is gone and takes the sweep up at once.
    second = start_agent("-q", "local", "-j", "8", "--resume-queues")
    wait_for(lambda: finished(home, sweep_id), timeout=120, what="the sweep to finish")
    done = trials(home, sweep_id)
    assert [t["seq"] for t in done] == list(range(12))
    assert len({json.dumps(t["params"], sort_keys=True) for t in done}) == 12
    assert [t["run_id"] for t in done[: len(before)]] == [t["run_id"] for t in before]
    assert all(starts(home, t["run_id"]) == 1 for t in done)  # each trial ran once
    assert all(t["outcome"] == "ok" for t in done), done
    assert most_at_once(intervals(home, [t["run_id"] for t in done])) <= 3
    assert "finished" in second.output()


def test_a_sweep_on_a_gpu_queue_gives_each_trial_its_own_gpu(
    home: Path, tmp_path: Path, start_agent: StartAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAUNCHCTL_GPU_DISCOVERY", "off")
    setup_queue(tmp_path, "gpu", '{"resource_args": {"local-process": {"gpus": 1}}}')
    config = {**GRID_12, "parameters": {"lr": {"values": [0.1, 0.01, 0.001, 0.0001]},
                                        "bs": {"values": [1, 2]}, "sleep": {"value": 1.0}},
              "scheduler": {"num_workers": 4}}  # fmt: skip
    sweep_id = launch_sweep(tmp_path, config, queue="gpu")
    start_agent("-q", "gpu", "--gpus", "0,1,2,3")
    wait_for(lambda: finished(home, sweep_id), timeout=120, what="the sweep to finish")
    done = trials(home, sweep_id)
    assert len(done) == 8 and all(t["outcome"] == "ok" for t in done)
    store = Store(home)
    try:
        gpus = {}
        for t in done:
            run = store.runs.get(t["run_id"])
            line = json.loads((store.run_dir(run["id"]) / "metrics.jsonl").read_text())
            assert [str(d) for d in run["devices"]] == [line["gpu"]]  # what it was given
            gpus[run["id"]] = line["gpu"]
    finally:
        store.close()
    assert most_at_once(intervals(home, list(gpus))) == 4
    # Runs that ran at the same time had different GPUs (running spans from the log).
    running = running_spans(home, list(gpus))
    for a, (a0, a1) in running.items():
        for b, (b0, b1) in running.items():
            if a < b and a0 < b1 and b0 < a1:
                assert gpus[a] != gpus[b], (a, b)


def running_spans(home: Path, run_ids: list[str]) -> dict[str, tuple[float, float]]:
    marks = ", ".join("?" for _ in run_ids)
    with sqlite3.connect(home / "launchctl.db") as db:
        rows = db.execute(
            f"SELECT run_id, at, to_state FROM events WHERE run_id IN ({marks}) ORDER BY id",
            run_ids,
        ).fetchall()
    start: dict[str, float] = {}
    end: dict[str, float] = {}
    for run_id, at, to_state in rows:
        if to_state == "claimed":
            start.setdefault(run_id, at)
        if to_state in ("finished", "failed", "stopped"):
            end[run_id] = at
    return {r: (start[r], end[r]) for r in run_ids}


def test_sweep_run_schedules_in_the_foreground(
    home: Path, tmp_path: Path, start_agent: StartAgent
) -> None:
    """``launchctl sweep run ID`` holds the sweep's lease, so the agent only runs the
    trials; it exits 0 once the sweep is finished, saying so."""
    import subprocess
    import sys

    setup_queue(tmp_path)
    config = {**GRID_12, "parameters": {"lr": {"values": [0.1, 0.01]}, "sleep": {"value": 0.1}},
              "scheduler": {"num_workers": 1}}  # fmt: skip
    sweep_id = launch_sweep(tmp_path, config)
    fg = subprocess.Popen(
        [sys.executable, "-m", "launchctl", "sweep", "run", sweep_id, "--poll", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: sweep_row(home, sweep_id)["scheduler_agent"], what="the lease")
        assert "-sweep-" in sweep_row(home, sweep_id)["scheduler_agent"]
        agent = start_agent("-q", "local")
        out, _ = fg.communicate(timeout=90)
    finally:
        if fg.poll() is None:
            fg.kill()
            fg.wait()
    assert fg.returncode == 0, out
    assert f"sweep {sweep_id}: finished" in out
    assert out.count("queued trial run") == 2
    assert [t["outcome"] for t in trials(home, sweep_id)] == ["ok", "ok"]
    assert f"sweep {sweep_id}: queued" not in agent.output()  # the agent scheduled nothing


def test_sweep_run_refuses_an_unknown_sweep_in_one_line(home: Path) -> None:
    proc = cli("sweep", "run", "nosuchsweep")
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1 and "nosuchsweep" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_parameter_values_reach_the_run_as_data_only(
    home: Path, tmp_path: Path, start_agent: StartAgent
) -> None:
    """A value that looks like shell (``$(...)``, ``; ...``) or a macro is one word of
    the run's arguments and a string in its run config: nothing runs it."""
    setup_queue(tmp_path)
    make_script(tmp_path / "code", "argv.py", TRAIN + "\nprint('ARGV', json.dumps(sys.argv))\n")
    cli("job", "create", "code", str(tmp_path / "code"), "-E", "python train.py", "-n", "train",
        check=True)  # fmt: skip
    pwned = tmp_path / "pwned"
    hostile = [f"$(touch {pwned})", f"; touch {pwned}", "${envvar:HOME}", "`touch x`"]
    config = {
        **GRID_12,
        "program": "argv.py",
        "command": ["${env}", "${interpreter}", "${program}", "${args}"],
        "parameters": {"lr": {"value": 0.01}, "note": {"values": hostile}, "sleep": {"value": 0}},
    }
    sweep_id = launch_sweep(tmp_path, config)
    start_agent("-q", "local")
    wait_for(lambda: finished(home, sweep_id), timeout=60, what="the sweep to finish")
    assert not pwned.exists()
    store = Store(home)
    try:
        seen = set()
        for t in trials(home, sweep_id):
            assert t["outcome"] == "ok"
            log = (store.run_dir(t["run_id"]) / "output.log").read_text()
            argv = json.loads(log.split("ARGV ", 1)[1].splitlines()[0])
            note = [a for a in argv if a.startswith("--note=")]
            assert note == [f"--note={t['params']['note']}"]
            seen.add(t["params"]["note"])
    finally:
        store.close()
    assert seen == set(hostile)


def test_a_paused_sweep_gets_no_new_trial_until_resumed(
    home: Path, tmp_path: Path, start_agent: StartAgent
) -> None:
    import time

    setup_queue(tmp_path)
    config = {**GRID_12, "parameters": {"lr": {"values": [0.1, 0.01, 0.001]},
                                        "bs": {"values": [1, 2]}, "sleep": {"value": 0.3}},
              "scheduler": {"num_workers": 1}}  # fmt: skip
    sweep_id = launch_sweep(tmp_path, config)
    start_agent("-q", "local")
    wait_for(lambda: len(trials(home, sweep_id)) >= 2, timeout=60, what="2 trials")
    cli("sweep", "pause", sweep_id, check=True)
    paused_at = time.time()
    # The trial in flight ends and is scored; then the agent's passes find nothing to do.
    wait_for(lambda: all(t["outcome"] for t in trials(home, sweep_id)), what="trials scored")
    wait_for(lambda: sweep_row(home, sweep_id)["scheduler_agent"] is None, what="lease given")
    time.sleep(1.0)  # room for a wrong trial to be queued
    resumed_at = time.time()
    cli("sweep", "resume", sweep_id, check=True)
    wait_for(lambda: finished(home, sweep_id), timeout=60, what="the sweep to finish")
    done = trials(home, sweep_id)
    assert len(done) == 6
    assert not [t["seq"] for t in done if paused_at < t["created_at"] < resumed_at]


def test_a_killed_foreground_scheduler_s_sweep_is_taken_up_when_its_lease_runs_out(
    home: Path, tmp_path: Path, start_agent: StartAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sweep run`` is not an agent (no process to check): its sweep waits for its lease
    to run out (LAUNCHCTL_SWEEP_LEASE_S, 30 s by default; 2 here), then the agent
    serving the queue schedules it, and no trial is lost or run twice."""
    import subprocess
    import sys

    monkeypatch.setenv("LAUNCHCTL_SWEEP_LEASE_S", "2")
    setup_queue(tmp_path)
    config = {**GRID_12, "parameters": {"lr": {"values": [0.1, 0.01, 0.001]},
                                        "bs": {"values": [1, 2]}, "sleep": {"value": 0.2}},
              "scheduler": {"num_workers": 2}}  # fmt: skip
    sweep_id = launch_sweep(tmp_path, config)
    fg = subprocess.Popen(
        [sys.executable, "-m", "launchctl", "sweep", "run", sweep_id, "--poll", "0.2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for(lambda: len(trials(home, sweep_id)) == 2, what="2 trials queued")
    fg.kill()
    fg.wait()
    held_by = sweep_row(home, sweep_id)["scheduler_agent"]
    assert "-sweep-" in held_by
    start_agent("-q", "local")
    wait_for(lambda: finished(home, sweep_id), timeout=90, what="the sweep to finish")
    done = trials(home, sweep_id)
    assert len(done) == 6 and all(t["outcome"] == "ok" for t in done)
    assert len({json.dumps(t["params"], sort_keys=True) for t in done}) == 6
    assert all(starts(home, t["run_id"]) == 1 for t in done)


def test_a_sweep_whose_trials_can_no_longer_launch_fails_saying_why(
    home: Path, tmp_path: Path, start_agent: StartAgent
) -> None:
    """Its job deleted after the sweep was made: the sweep fails with the launch's
    refusal as its reason, no trial is stored, and the agent goes on serving its queue."""
    setup_queue(tmp_path)
    sweep_id = launch_sweep(tmp_path, GRID_12)
    cli("job", "delete", "train", "--yes", check=True)
    agent = start_agent("-q", "local")
    wait_for(lambda: sweep_row(home, sweep_id)["state"] == "failed", what="the sweep to fail")
    reason = sweep_row(home, sweep_id)["reason"]
    assert reason.startswith("trial 0 cannot be launched: ") and "train" in reason
    assert "\n" not in reason
    assert trials(home, sweep_id) == []
    cli("launch", "-q", "local", "-u", str(tmp_path / "code"), "-E", "python -c pass",
        check=True)  # fmt: skip
    wait_for(lambda: "finished" in agent.output(), what="the agent to run a plain run")
