"""Benchmark 8, sweep: the scheduler's overhead per trial, from a trial's run ending to the
next trial's run being queued, read from the store's event log, against W&B's documented
poll interval.

A grid sweep of N trials with ``num_workers: 1`` runs through one idle agent serving its
queue (the scheduler runs inside that agent): each trial is a local-process run of a
one-line script that appends its metric to ``LAUNCHCTL_METRICS_FILE``. With one worker,
trial k+1 can only be queued once trial k's run has ended, so the gap between the run's
terminal event (its ``at``) and the next run's ``created_at`` is what the scheduler adds
per trial: noticing the end, scoring the trial, asking the search, and queuing the run.

The baseline is not measured (there is no W&B server here): W&B's sweep scheduler polls
its sweep's runs every 10 s by default (``wandb sweep-scheduler --poll-interval``, default
10.0, "Seconds to wait between polls of the sweep's runs": W&B's CLI reference,
https://docs.coreweave.com/products/wandb/ref/cli/wandb-sweep-scheduler.md, and
wandb/cli/cli.py ``sweep_scheduler``); the Launch sweep scheduler sleeps 5 s between its
passes (wandb/sdk/launch/sweeps/scheduler.py ``DEFAULT_POLLING_SLEEP``), and the Launch
agent that then runs the queued trial polls its queue every 10 s
(wandb/sdk/launch/agent/agent.py ``AGENT_POLLING_INTERVAL``). A poll adds half its
interval on average and all of it at worst.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness import LAUNCHCTL, ROOT, Settings, background, fresh_home, median, use_home, wait_for
from report import Report, Row, met, secs

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

WANDB_POLL_S = 10.0  # wandb sweep-scheduler --poll-interval's default (documented)
WANDB_LAUNCH_SCHEDULER_SLEEP_S = 5.0  # wandb/sdk/launch/sweeps/scheduler.py
TARGET_S = 1.0
TRAIN = (
    "import json, os\n"
    "cfg = json.loads(os.environ['WANDB_CONFIG'])\n"
    "with open(os.environ['LAUNCHCTL_METRICS_FILE'], 'a') as fh:\n"
    "    fh.write(json.dumps({'loss': (cfg['x'] - 7) ** 2}) + '\\n')\n"
)


def _cli(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(
        [LAUNCHCTL, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"launchctl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def gaps(env: dict[str, str], sweep_id: str, to: str = "queued") -> list[float]:
    """For each trial after the first: its run's creation (``to`` queued), or the time it
    started running (``to`` running), minus the previous run's end."""
    from launchctl.states import TERMINAL
    from launchctl.sweeps import scheduler

    with use_home(env) as store:
        trials = sorted(scheduler.trials(store, sweep_id), key=lambda t: t["seq"])
        ends, created = [], []
        for trial in trials:
            run = store.runs.get(trial["run_id"])
            events = store.runs.events(trial["run_id"])
            ends.append(next(e["at"] for e in events if e["to_state"] in TERMINAL))
            if to == "queued":
                created.append(run["created_at"])
            else:
                created.append(next(e["at"] for e in events if e["to_state"] == to))
    return [created[i] - ends[i - 1] for i in range(1, len(trials))]


def best_params(env: dict[str, str], sweep_id: str) -> dict[str, object] | None:
    """The best trial's parameters, as ``sweep show`` names it."""
    from launchctl.sweeps import report as sweep_report

    with use_home(env) as store:
        best = sweep_report.load(store, sweep_id).best
    return best["params"] if best else None


def bench_sweep(settings: Settings, report: Report) -> None:
    """N trials one at a time through an agent: the gap between one's end and the next."""
    trials = max(10, 2 * settings.dispatch_reps)
    with fresh_home("sweep") as (tmp, env):
        code = tmp / "code"
        code.mkdir()
        (code / "train.py").write_text(TRAIN)
        _cli(env, "queue", "create", "q", "--resource", "local-process")
        _cli(env, "job", "create", "code", str(code), "-n", "trainer", "-E", "python train.py")
        config = {
            "job": "trainer",
            "method": "grid",
            "metric": {"name": "loss", "goal": "minimize"},
            "parameters": {"x": {"values": list(range(trials))}},
            "scheduler": {"num_workers": 1},
        }
        path = tmp / "sweep.json"
        path.write_text(json.dumps(config))
        sweep_id = _cli(env, "launch-sweep", str(path), "-q", "q")
        with background([LAUNCHCTL, "agent", "-q", "q"], env, tmp / "agent.log"):

            def done() -> bool:
                shown = json.loads(_cli(env, "sweep", "list", "--json"))
                return any(s["id"] == sweep_id and s["state"] != "running" for s in shown)

            wait_for(done, 60.0 + 5.0 * trials, f"sweep {sweep_id} to finish", step_s=0.5)
        values = gaps(env, sweep_id)
        running = gaps(env, sweep_id, "running")
        best = best_params(env, sweep_id)
    mid, worst = median(values), max(values)
    report.rows.append(
        Row(
            f"sweep: trial's run ends -> next trial queued (median of {len(values)})",
            secs(mid),
            secs(WANDB_POLL_S),
            "W&B sweep-scheduler poll interval (documented default)",
            f"{WANDB_POLL_S / mid:.0f}x shorter" if mid > 0 else "-",
            f"< {TARGET_S:.0f} s",
            met(mid < TARGET_S),
        )
    )
    report.notes.append(
        f"sweep: {trials} grid trials, num_workers 1, one agent; the gap is the store's event"
        f" log (a run's terminal event -> the next run's created_at): median {mid:.3f} s,"
        f" worst {worst:.3f} s; to the next trial's process running: median"
        f" {median(running):.3f} s. W&B's is a poll: {WANDB_POLL_S:.0f} s by default for"
        f" `wandb sweep-scheduler` ({WANDB_POLL_S / 2:.0f} s on average),"
        f" {WANDB_LAUNCH_SCHEDULER_SLEEP_S:.0f} s for the Launch sweep scheduler, and then the"
        " Launch agent's own 10 s queue poll before the trial runs. Best trial:"
        f" {best if best else '-'}."
    )
    report.raw["sweep"] = {
        "trials": trials,
        "gaps_s": values,
        "median_s": mid,
        "max_s": worst,
        "to_running_s": running,
    }


if __name__ == "__main__":
    from harness import Settings as _Settings

    rep = Report()
    bench_sweep(_Settings(5, 5, 100, 1, 5, 5, Path("bench-results")), rep)
    for row in rep.rows:
        print(row)
    print("\n".join(rep.notes))
