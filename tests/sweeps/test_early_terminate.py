"""Early termination (W&B's hyperband) and optuna's sampler settings for sweeps (issue 15),
driven as a user drives them: ``launch-sweep`` with a W&B sweep config, a real agent
running the trials on a local-process queue, ``sweep show``. W&B's own sweep engine (the
``sweeps`` package, run in a process of its own: this folder's package is named
``sweeps`` too) is the oracle for which trials hyperband stops."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import StartAgent, cli, make_script, table_counts, wait_for

from launchctl import paths
from launchctl.store import Store
from launchctl.sweeps import scheduler

# A trial logs its metric once a step to LAUNCHCTL_METRICS_FILE (its history). ``lr``
# above 0.5 is a bad trial: loss 5 for 150 steps (15 s unless stopped); a good one's
# loss goes down from 1 over 20 steps, the same values for every good trial.
TRAIN = """
import json, os, time
cfg = json.loads(os.environ["WANDB_CONFIG"])
bad = cfg["lr"] > 0.5
for step in range(150 if bad else 20):
    loss = 5.0 if bad else 1.0 - 0.01 * step
    with open(os.environ["LAUNCHCTL_METRICS_FILE"], "a") as f:
        f.write(json.dumps({"val_loss": loss, "step": step}) + "\\n")
    time.sleep(0.1)
"""

# W&B's documented hyperband form with max_iter and s: one band, at step 8 / 2 = 4.
HYPERBAND = {
    "method": "grid",
    "job": "train",
    "metric": {"name": "val_loss", "goal": "minimize"},
    "parameters": {"lr": {"values": [0.1, 0.2, 0.3, 0.8, 0.9]}},
    "early_terminate": {"type": "hyperband", "max_iter": 8, "s": 1, "eta": 2},
    "scheduler": {"num_workers": 5},
}

_ORACLE = """
import json, sys, warnings
warnings.simplefilter("ignore")
from sweeps import RunState, SweepRun
from sweeps.hyperband_stopping import hyperband_stop_runs
config, histories = json.load(sys.stdin)
runs = [SweepRun(name=str(i), state=RunState.running, history=h)
        for i, h in enumerate(histories)]
print(json.dumps(sorted(int(r.name) for r in hyperband_stop_runs(runs, config))))
"""


def wandb_stops(config: dict[str, Any], histories: list[list[dict[str, Any]]]) -> list[int]:
    """Which of these (running) trials W&B's hyperband stops, given their histories."""
    proc = subprocess.run(
        [sys.executable, "-c", _ORACLE], input=json.dumps([config, histories]),
        capture_output=True, text=True, check=True, cwd="/",
    )  # fmt: skip
    stops: list[int] = json.loads(proc.stdout)
    return stops


def setup_queue(tmp_path: Path, script: str = TRAIN) -> None:
    make_script(tmp_path / "code", "train.py", script)
    cli("job", "create", "code", str(tmp_path / "code"), "-E", "python train.py", "-n", "train",
        check=True)  # fmt: skip
    cli("queue", "create", "local", "--resource", "local-process", check=True)


def launch_sweep(tmp_path: Path, config: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    return cli("launch-sweep", str(path), "-q", "local")


def sweep_state(home: Path, sweep_id: str) -> str:
    with sqlite3.connect(home / "launchctl.db") as db:
        return str(db.execute("SELECT state FROM sweeps WHERE id = ?", [sweep_id]).fetchone()[0])


def trials(home: Path, sweep_id: str) -> list[dict[str, Any]]:
    store = Store(home)
    try:
        return scheduler.trials(store, sweep_id)
    finally:
        store.close()


def events(home: Path, run_id: str) -> list[str]:
    with sqlite3.connect(home / "launchctl.db") as db:
        rows = db.execute("SELECT message FROM events WHERE run_id = ? ORDER BY id", [run_id])
        return [str(r[0] or "") for r in rows]


def metrics(home: Path, run_id: str) -> list[dict[str, Any]]:
    path = home / "runs" / run_id / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_hyperband_stops_the_bad_trials_early_and_wandb_agrees(
    home: Path, tmp_path: Path, start_agent: StartAgent
) -> None:
    setup_queue(tmp_path)
    proc = launch_sweep(tmp_path, HYPERBAND)
    assert proc.returncode == 0, proc.stderr
    assert "not applied" not in proc.stderr
    sweep_id = proc.stdout.split()[0]
    start_agent("-q", "local", "-j", "5")
    wait_for(lambda: sweep_state(home, sweep_id) == "finished", timeout=120,
             what="the hyperband sweep to finish")  # fmt: skip
    done = {t["params"]["lr"]: t for t in trials(home, sweep_id)}
    assert sorted(done) == [0.1, 0.2, 0.3, 0.8, 0.9]
    for lr in (0.1, 0.2, 0.3):  # the good ones ran to their end
        good = done[lr]
        assert good["outcome"] == "ok" and good["run_state"] == "finished", good
        assert len(metrics(home, good["run_id"])) == 20
        assert good["metric"] == pytest.approx(0.81)
    for lr in (0.8, 0.9):  # the bad ones were stopped, counted with their value
        bad = done[lr]
        assert bad["run_state"] == "stopped", bad
        assert bad["outcome"].startswith("early-terminated: stopped early by hyperband at step "), (
            bad
        )
        assert "val_loss 5" in bad["outcome"]
        assert bad["metric"] == 5.0
        assert len(metrics(home, bad["run_id"])) < 150
        notes = [m for m in events(home, bad["run_id"]) if "hyperband" in m]
        # Decided once (the note), cancelled once: never stopped twice.
        assert len([m for m in notes if m.startswith("stopped early by hyperband")]) == 1, notes
        assert len([m for m in notes if m.startswith("cancelled by hyperband")]) == 1, notes
    # W&B's engine, given every trial's history as it ended (all marked running), stops
    # the same trials: the bad ones, not the good ones.
    order = sorted(done)
    histories = [[{"val_loss": m["val_loss"]} for m in metrics(home, done[lr]["run_id"])]
                 for lr in order]  # fmt: skip
    stops = wandb_stops(
        {k: HYPERBAND[k] for k in ("method", "metric", "early_terminate", "parameters")},
        histories,
    )
    assert [order[i] for i in stops] == [0.8, 0.9]
    # sweep show says so, and the best is a good trial.
    shown = cli("sweep", "show", sweep_id, check=True).stdout
    assert shown.count("early-terminated") >= 2, shown
    assert "stopped early by hyperband at step" in shown
    report = json.loads(cli("sweep", "show", sweep_id, "--json", check=True).stdout)
    states = {t["params"]["lr"]: t["state"] for t in report["trials"]}
    assert states == {0.1: "finished", 0.2: "finished", 0.3: "finished",
                      0.8: "early-terminated", 0.9: "early-terminated"}  # fmt: skip
    assert report["best"]["params"]["lr"] in (0.1, 0.2, 0.3)


def test_a_random_sampler_with_a_seed_proposes_as_optuna_does(
    home: Path, tmp_path: Path, start_agent: StartAgent
) -> None:
    import optuna

    script = """
import json, os
cfg = json.loads(os.environ["WANDB_CONFIG"])
with open(os.environ["LAUNCHCTL_METRICS_FILE"], "a") as f:
    f.write(json.dumps({"loss": cfg["x"]}) + "\\n")
"""
    setup_queue(tmp_path, script)
    config = {
        "method": "random", "job": "train", "run_cap": 5,
        "metric": {"name": "loss", "goal": "minimize"},
        "parameters": {"x": {"distribution": "uniform", "min": -3.0, "max": 3.0}},
        "scheduler": {"num_workers": 1,
                      "settings": {"sampler": {"type": "RandomSampler", "args": {"seed": 11}}}},
    }  # fmt: skip
    proc = launch_sweep(tmp_path, config)
    assert proc.returncode == 0, proc.stderr
    assert "not used" not in proc.stderr
    sweep_id = proc.stdout.split()[0]
    start_agent("-q", "local", "-j", "2")
    wait_for(lambda: sweep_state(home, sweep_id) == "finished", timeout=120,
             what="the random sweep to finish")  # fmt: skip
    got = [t["params"]["x"] for t in trials(home, sweep_id)]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=11))
    dist = {"x": optuna.distributions.FloatDistribution(-3.0, 3.0)}
    assert got == [study.ask(dist).params["x"] for _ in range(5)]


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"sampler": {"type": "NoSuchSampler"}}, "is not one of optuna's samplers"),
        ({"sampler": {"type": "TPESampler", "args": {"n_startup_trials": "many", "x": 1}}},
         "args refused by optuna's TPESampler"),
        ({"sampler": "TPESampler"}, "sampler must be {type: TPESampler"),
        ({"sampler": {"type": "RandomSampler", "args": [1]}}, "args must be a mapping"),
    ],
)  # fmt: skip
def test_a_sampler_optuna_cannot_build_is_one_line_and_nothing_stored(
    home: Path, tmp_path: Path, settings: dict[str, Any], says: str
) -> None:
    setup_queue(tmp_path)
    before = table_counts(home)
    config = {"method": "bayes", "job": "train", "metric": {"name": "loss"},
              "parameters": {"x": {"min": 0.0, "max": 1.0}},
              "scheduler": {"settings": settings}}  # fmt: skip
    proc = launch_sweep(tmp_path, config)
    assert proc.returncode == 1
    assert says in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert table_counts(home) == before


def test_a_hyperband_without_a_band_is_refused_as_wandb_refuses_it(
    home: Path, tmp_path: Path
) -> None:
    setup_queue(tmp_path)
    before = table_counts(home)
    config = dict(HYPERBAND, early_terminate={"type": "hyperband", "max_iter": 2, "s": 1,
                                              "eta": 3})  # fmt: skip
    proc = launch_sweep(tmp_path, config)
    assert proc.returncode == 1
    assert "W&B's hyperband refuses it: Bands must be an array of length at least 1" in (
        proc.stderr
    )
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert table_counts(home) == before


def test_a_pruner_is_kept_and_said_unused(home: Path, tmp_path: Path) -> None:
    setup_queue(tmp_path)
    config = {"method": "bayes", "job": "train", "metric": {"name": "loss"},
              "parameters": {"x": {"min": 0.0, "max": 1.0}},
              "scheduler": {"settings": {"pruner": {"type": "HyperbandPruner"},
                                         "sampler": {"type": "TPESampler"}}}}  # fmt: skip
    proc = launch_sweep(tmp_path, config)
    assert proc.returncode == 0, proc.stderr
    assert "scheduler.settings pruner kept but not used yet" in proc.stderr


@pytest.fixture
def wandb_sweeps(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """W&B's ``sweeps`` package importable in this process, where this test folder's
    package (also named ``sweeps``) shadows it; put back afterwards."""
    import warnings

    def ours() -> list[str]:
        return [m for m in sys.modules if m == "sweeps" or m.startswith("sweeps.")]

    tests_dir = str(Path(__file__).resolve().parents[1])
    for name in ours():
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in (tests_dir, "", ".")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import sweeps
    assert hasattr(sweeps, "SweepRun"), sweeps.__file__
    yield
    for name in ours():  # W&B's modules out; the monkeypatch puts this folder's back
        del sys.modules[name]


def test_a_decision_survives_a_scheduler_restart_and_no_trial_is_stopped_twice(
    home: Path, tmp_path: Path, wandb_sweeps: None
) -> None:
    """A scheduler that decided to stop a trial (its note on the run) and died before the
    cancel: the next scheduler cancels it, once, and asks W&B's engine about it no more.
    Driven in-process (no agent): the trials' runs are moved to running by hand and their
    histories written where a run writes them."""
    setup_queue(tmp_path)
    config = dict(HYPERBAND, scheduler={"num_workers": 5})
    proc = launch_sweep(tmp_path, config)
    assert proc.returncode == 0, proc.stderr
    sweep_id = proc.stdout.split()[0]
    store = Store(home)
    try:
        first = scheduler.tick(store, sweep_id, "sched-1", lease_s=60)
        assert len(first.launched) == 5
        by_lr = {t["params"]["lr"]: t["run_id"] for t in scheduler.trials(store, sweep_id)}
        for lr, run_id in by_lr.items():
            store.runs.claim(run_id, "agent-x", 60)
            store.runs.move(run_id, ["claimed"], "starting", agent_id="agent-x")
            store.runs.move(run_id, ["starting"], "running", agent_id="agent-x")
            loss = 5.0 if lr > 0.5 else 1.0
            lines = "".join(json.dumps({"val_loss": loss}) + "\n" for _ in range(6))
            run_dir = paths.run_dir(run_id, home)
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "metrics.jsonl").write_text(lines)
        # sched-1 decided to stop lr 0.9 and died before its cancel.
        store.runs.note(by_lr[0.9], "stopped early by hyperband at step 6: val_loss 5 (...)")
        scheduler._SEARCHERS.clear()
        again = scheduler.tick(store, sweep_id, "sched-2", lease_s=60, dead=["sched-1"])
        assert again.held
        assert sorted(again.stopped_early) == sorted([by_lr[0.8], by_lr[0.9]])
        for lr in (0.8, 0.9):
            assert store.runs.get(by_lr[lr])["cancel_requested"]
            msgs = [str(e["message"] or "") for e in store.runs.events(by_lr[lr])]
            assert len([m for m in msgs if m.startswith("stopped early by hyperband")]) == 1
        for lr in (0.1, 0.2, 0.3):
            assert not store.runs.get(by_lr[lr])["cancel_requested"]
        # The next pass stops nothing more (the runs still run until their agent acts).
        assert scheduler.tick(store, sweep_id, "sched-2", lease_s=60).stopped_early == []
        for lr in (0.8, 0.9):
            msgs = [str(e["message"] or "") for e in store.runs.events(by_lr[lr])]
            assert len([m for m in msgs if m.startswith("cancelled by hyperband")]) == 1, msgs
    finally:
        store.close()
