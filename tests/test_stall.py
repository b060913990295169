"""Stuck runs (issue 18): a queue's ``stall_after`` and ``on_stall``, with real agents, real
processes, a real store and the loopback webhook receiver of the hooks tests.

A run here prints, then waits for a file the test writes (it polls for it: the run's
own pace, never the test's); the test waits on what the agent records, never on time.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import StartAgent, cli, cli_json, make_script, wait_for
from test_hooks import ALICE, BACKOFF, BOB, Receiver

from launchctl.agent.stall import StallWatch
from launchctl.states import State, move
from launchctl.store import Store


@pytest.fixture(autouse=True)
def fast_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in BACKOFF.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def receiver() -> Any:
    r = Receiver()
    yield r
    r.close()


def silent_job(tmp_path: Path, *, after: str = "") -> Path:
    """A run that prints its process group, waits silently for ``go``, prints ``back``,
    then (with ``after``) does that, and ends when ``end`` is there."""
    body = f"""
import os, sys, time
from pathlib import Path
flags = Path({str(tmp_path)!r})
print("step 1 pgid", os.getpgid(0), flush=True)
while not (flags / "go").exists():
    time.sleep(0.05)
print("back", flush=True)
while not (flags / "end").exists():
    {after or "time.sleep(0.05)"}
print("done", flush=True)
"""
    return make_script(tmp_path / "job", "main.py", body).parent


def queue(name: str, config: dict[str, Any]) -> None:
    cli("queue", "create", name, "--config", json.dumps(config), check=True)


def launch(name: str, code: Path) -> str:
    proc = cli("launch", "-q", name, "-u", str(code), "-E", "python main.py")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def show(run_id: str) -> dict[str, Any]:
    return dict(cli_json("runs", "show", run_id))


def notes(run: dict[str, Any]) -> list[str]:
    return [e["message"] for e in run["events"] if e["from_state"] == e["to_state"]]


def stalled(run_id: str) -> dict[str, Any] | None:
    run = show(run_id)
    return run if run.get("stalled_at") else None


def run_hooks(run_id: str) -> list[dict[str, Any]]:
    return list(show(run_id)["hooks"]["deliveries"])


def logged(run_id: str, text: str) -> bool:
    return text in cli("logs", run_id, check=True).stdout


def test_a_silent_run_is_marked_its_hooks_fire_it_keeps_running_and_speaking_clears_it(
    tmp_path: Path, start_agent: StartAgent, receiver: Receiver
) -> None:
    env_file = tmp_path / "hook-env"
    hooks = [
        {"on": ["stalled"], "webhook": f"{receiver.url}/stuck"},
        {"on": ["stalled"], "command": f"env > {env_file}"},
        {"on": ["failed"], "webhook": f"{receiver.url}/failed"},  # not for a stall
    ]
    queue("train", {"stall_after": "2s", "hooks": hooks})
    ticking = "print('tick', flush=True); time.sleep(0.2)"
    run_id = launch("train", silent_job(tmp_path, after=ticking))
    agent = start_agent("-q", "train")
    run = wait_for(lambda: stalled(run_id), what="the run marked stalled")
    assert run["state"] == "running"  # without on_stall: reported, never stopped
    log = Path(run["log_path"])
    # stalled_at is the run's last output (its log's mtime), not when it was found.
    assert run["stalled_at"] == pytest.approx(log.stat().st_mtime, abs=0.01)
    assert sum(n.startswith("stalled: no output for ") for n in notes(run)) == 1
    shown = cli("runs", "show", run_id, check=True).stdout
    assert "stalled:    no output since" in shown
    wait_for(lambda: f"run {run_id} stalled: no output for" in agent.output(), what="said")
    # The hooks named `stalled` are delivered, with the same machinery as an end's.
    wait_for(lambda: receiver.requests and env_file.exists(), what="both stall hooks")
    body = json.loads(receiver.requests[0]["body"])
    assert receiver.requests[0]["path"] == "/stuck"
    assert (body["event"], body["state"], body["run_id"]) == ("run.stalled", "running", run_id)
    assert body["stalled_since"].endswith("Z") and body["silent_s"] >= 2
    assert "log" not in body and "run_as" not in body
    wait_for(lambda: "LAUNCHCTL_HOOK_EVENT=" in env_file.read_text(), what="the command's env")
    delivered = f"queue  webhook {receiver.url}/stuck (stalled)  delivered"
    wait_for(lambda: delivered in cli("runs", "show", run_id, check=True).stdout, what="shown")
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    assert env["LAUNCHCTL_HOOK_EVENT"] == "run.stalled"
    assert env["LAUNCHCTL_RUN_ID"] == run_id and env["LAUNCHCTL_RUN_STATE"] == "running"
    assert "LAUNCHCTL_HOME" not in env
    # It speaks again: the mark is cleared, saying after how long.
    (tmp_path / "go").touch()
    wait_for(lambda: stalled(run_id) is None, what="the mark cleared")
    run = show(run_id)
    assert any(n.startswith("output again after ") for n in notes(run))
    assert "stalled:    no output since" not in cli("runs", "show", run_id, check=True).stdout
    (tmp_path / "end").touch()
    wait_for(lambda: show(run_id)["state"] == "finished", what="the run's end")
    assert len(receiver.requests) == 1  # one stall, one delivery; no end hook for `finished`


def test_on_stall_stop_fails_the_run_with_reason_stalled_and_ends_its_process_group(
    tmp_path: Path, start_agent: StartAgent
) -> None:
    queue("train", {"stall_after": "2s", "on_stall": "stop"})
    # A child in the run's process group, silent too: the stop must take it as well.
    code = silent_job(tmp_path)
    main = code / "main.py"
    main.write_text("import subprocess\nsubprocess.Popen(['sleep', '300'])\n" + main.read_text())
    run_id = launch("train", code)
    # The agent config's own hook, named `stalled`: its owner's, with the real log.
    seen = tmp_path / "seen.txt"
    config = tmp_path / "launch-config.yaml"
    config.write_text(
        "queues: [train]\n"
        "hooks:\n"
        '  - "on": [stalled]\n'  # quoted: YAML reads a bare on as true
        f"    command: 'echo \"$LAUNCHCTL_HOOK_EVENT $LAUNCHCTL_LOG\" > {seen}'\n"
    )
    agent = start_agent("-c", str(config), "--grace", "1")
    wait_for(lambda: show(run_id)["state"] == "failed", what="the stalled run stopped")
    run = show(run_id)
    assert (run["reason"], run["stage"]) == ("stalled", "run")
    assert any(n.startswith("stalled: no output for ") for n in notes(run))
    pgid = int(cli("logs", run_id, check=True).stdout.split("pgid", 1)[1].split()[0])

    def group_gone() -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(group_gone, what="the run's process group gone")
    assert run["stalled_at"] is None  # the mark goes with the run's end; its reason stays
    [hook] = wait_for(lambda: [d for d in run_hooks(run_id) if d["state"] != "pending"],
                      what="the agent's stall hook")  # fmt: skip
    assert (hook["source"], hook["state"], hook["event"]) == ("agent", "delivered", "run.stalled")
    assert seen.read_text().split() == ["run.stalled", run["log_path"]]
    out = agent.output()
    assert f"run {run_id} stalled: no output for" in out and "on_stall: stop" in out
    assert f"stopping run {run_id}: stalled" in out


def test_a_run_that_keeps_printing_is_never_marked(tmp_path: Path, start_agent: StartAgent) -> None:
    queue("train", {"stall_after": 1, "on_stall": "stop"})
    # Prints every 0.2 s for 3 s: three times its stall_after, never silent for one.
    body = "import time\nfor i in range(15):\n    print(i, flush=True)\n    time.sleep(0.2)\n"
    run_id = launch("train", make_script(tmp_path / "chatty", "main.py", body).parent)
    start_agent("-q", "train")
    wait_for(lambda: show(run_id)["state"] == "finished", what="the run's end")
    run = show(run_id)
    assert run["stalled_at"] is None and run["reason"] is None
    assert not [n for n in notes(run) if "stalled" in n]


def test_a_queued_run_behind_a_stalled_one_is_never_marked(
    tmp_path: Path, start_agent: StartAgent
) -> None:
    queue("train", {"stall_after": 1})
    first = launch("train", silent_job(tmp_path))
    second = launch("train", silent_job(tmp_path / "second"))
    start_agent("-q", "train", "--max-jobs", "1")
    wait_for(lambda: stalled(first), what="the running run marked")
    run = show(second)  # queued all along, silent longer than the first: not a stall
    assert (run["state"], run["stalled_at"]) == ("queued", None)
    assert not [n for n in notes(run) if "stalled" in n]
    (tmp_path / "go").touch()
    (tmp_path / "end").touch()


def test_an_agent_restart_keeps_watching_from_the_log_s_time_and_never_marks_twice(
    tmp_path: Path, start_agent: StartAgent, receiver: Receiver
) -> None:
    hooks = [{"on": ["stalled"], "webhook": receiver.url}]
    queue("train", {"stall_after": "3s", "hooks": hooks})
    run_id = launch("train", silent_job(tmp_path))
    first = start_agent("-q", "train")
    wait_for(lambda: logged(run_id, "step 1"), what="the run's first line")
    first.signal(signal.SIGKILL)
    first.wait(timeout=10)
    restarted_at = time.time()
    second = start_agent("-q", "train")
    run = wait_for(lambda: stalled(run_id), what="the adopted run marked")
    # Its silence counts from its log's last write, before this agent was started.
    assert run["stalled_at"] < restarted_at
    assert run["stalled_at"] == pytest.approx(Path(run["log_path"]).stat().st_mtime, abs=0.01)
    wait_for(lambda: len(receiver.requests) == 1, what="the stall hook")
    second.signal(signal.SIGKILL)
    second.wait(timeout=10)
    third = start_agent("-q", "train")
    wait_for(
        lambda: (
            notes(show(run_id)).count("adopted: following it again after its agent was lost") == 2
        ),
        what="the third agent adopting it",
    )
    (tmp_path / "go").touch()  # the third agent clears the mark: it watches too
    wait_for(lambda: stalled(run_id) is None, what="the mark cleared by the third agent")
    run = show(run_id)
    assert len([n for n in notes(run) if n.startswith("stalled: ")]) == 1
    assert len(receiver.requests) == 1
    (tmp_path / "end").touch()
    wait_for(lambda: show(run_id)["state"] == "finished", what="the run's end")
    assert f"run {run_id} stalled" not in third.output()


def test_a_run_writing_its_own_w_b_log_is_not_silent_but_a_link_it_plants_does_not_count(
    tmp_path: Path, start_agent: StartAgent
) -> None:
    queue("train", {"stall_after": 1, "on_stall": "stop"})
    # W&B's transaction log, as wandb.init() writes it in the working copy: life.
    wandb_body = """
import time
from pathlib import Path
print("start", flush=True)
folder = Path("wandb/run-20260101_000000-abcd1234")
folder.mkdir(parents=True)
for i in range(15):
    with open(folder / "run-abcd1234.wandb", "ab") as fh:
        fh.write(b"record")
    time.sleep(0.2)
"""
    metrics = launch("train", make_script(tmp_path / "metrics", "main.py", wandb_body).parent)
    # A link to a file somebody else writes is not the run's output: never followed.
    busy = tmp_path / "elsewhere" / "run-20260101_000000-evil"
    busy.mkdir(parents=True)
    link_body = f"""
import os, time
from pathlib import Path
print("start", flush=True)
os.makedirs("wandb")
os.symlink({str(busy)!r}, "wandb/run-20260101_000000-evil")
while True:
    time.sleep(0.05)
"""
    planted = launch("train", make_script(tmp_path / "planted", "main.py", link_body).parent)
    start_agent("-q", "train", "-j", "2", "--grace", "1")

    def touch_elsewhere() -> str:
        with open(busy / "run-evil.wandb", "ab") as fh:
            fh.write(b"x")
        return str(show(planted)["state"])

    wait_for(lambda: touch_elsewhere() == "failed", what="the planted run stopped")
    assert show(planted)["reason"] == "stalled"
    wait_for(lambda: show(metrics)["state"] == "finished", what="the W&B run's end")
    run = show(metrics)
    assert run["reason"] is None and not [n for n in notes(run) if "stalled" in n]


def test_a_member_cannot_set_a_team_queue_s_stall_rules_only_its_admins(home: Path) -> None:
    cli("team", "create", "vision", env=ALICE, check=True)
    cli("team", "add", "vision", "bob", env=ALICE, check=True)
    cli("queue", "create", "gpu", "--entity", "vision", env=ALICE, check=True)
    config = json.dumps({"stall_after": 1, "on_stall": "stop"})  # would stop alice's runs
    proc = cli("queue", "edit", "gpu", "--config", config, env=BOB)
    assert proc.returncode == 1 and "admin" in proc.stderr and proc.stderr.count("\n") == 1
    assert "on_stall" not in cli_json("queue", "show", "gpu")["config"]
    cli("queue", "edit", "gpu", "--config", config, env=ALICE, check=True)  # its admin may
    assert cli_json("queue", "show", "gpu")["config"]["on_stall"] == "stop"


def test_stall_settings_are_checked_when_written() -> None:
    for config, message in [
        ({"stall_after": "0s"}, "stall_after must be a duration from 1s to 366d"),
        ({"stall_after": "soon"}, "stall_after must be a duration"),
        ({"stall_after": True}, "stall_after must be a duration"),
        ({"stall_after": "1m", "on_stall": "kill"}, "on_stall must be one of report, stop"),
        ({"on_stall": "stop"}, "on_stall needs stall_after"),
        ({"hooks": [{"on": ["stuck"], "notify": True}]}, "finished, failed, stopped, stalled"),
    ]:
        proc = cli("queue", "create", "x", "--config", json.dumps(config))
        assert proc.returncode == 1 and message in proc.stderr, (config, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert cli("queue", "list", "--json", check=True).stdout.count('"name": "x"') == 0


# -- the watch in-process: GPUs through a stand-in reader, states before running ------------------


def _running(home: Path, tmp_path: Path, *, devices: list[int], silent_s: float) -> str:
    """A run of queue ``gpu`` (stall_after 1s) held by ``agent-x``, running for a while,
    with ``devices``, its log last written ``silent_s`` ago. The store's own moves."""
    queue("gpu", {"stall_after": 1})
    run_id = launch("gpu", make_script(tmp_path / "g", "main.py", "pass\n").parent)
    store = Store(home)
    assert store.runs.claim(run_id, "agent-x", 600) is not None
    long_ago = time.time() - 100
    move(store, run_id, State.STARTING, agent_id="agent-x", expect=frozenset({State.CLAIMED}))
    move(store, run_id, State.RUNNING, agent_id="agent-x", started_at=long_ago,
         expect=frozenset({State.STARTING}))  # fmt: skip
    with store.db.write():
        store.db.execute("UPDATE runs SET devices = ? WHERE id = ?", [json.dumps(devices), run_id])
    log = home / "runs" / run_id / "output.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("loading data\n")
    os.utime(log, (time.time() - silent_s, time.time() - silent_s))
    store.close()
    return run_id


def _active(run_id: str) -> Any:
    return SimpleNamespace(run_id=run_id, handle=object(), stop_reason=None, run=None)


def test_a_silent_run_whose_gpus_compute_is_not_stalled_until_they_idle(
    home: Path, tmp_path: Path
) -> None:
    """STAND-IN: the GPU reading is a fake function injected in place of NVML's (no GPU
    here); the real reading is tested by the NVML test below, on a machine with one."""
    run_id = _running(home, tmp_path, devices=[0, 1], silent_s=50)
    use = {"percent": 80}
    asked: list[list[int]] = []

    def fake_gpu_use(indices: list[int]) -> int | None:
        asked.append(list(indices))
        return use["percent"]

    store = Store(home)
    said: list[str] = []
    stops: list[str] = []
    watch = StallWatch(store, said.append, agent_id="agent-x", hooks=[], gpu_use=fake_gpu_use)
    active = {run_id: _active(run_id)}
    watch.check(active, lambda a, reason: stops.append(reason))
    assert asked == [[0, 1]]  # silent for 50 s, but its GPUs compute: not stalled
    assert store.runs.get(run_id)["stalled_at"] is None and not said
    busy_at = time.time()
    use["percent"] = 0  # idle from now: stalled once idle for stall_after (1 s)
    wait_for(
        lambda: watch.check(active, lambda a, r: None) or store.runs.get(run_id)["stalled_at"],
        what="stalled once its GPUs idle",
    )
    marked = store.runs.get(run_id)["stalled_at"]
    assert busy_at - 1 < marked <= busy_at + 0.05  # its last sign of life: the busy GPU
    assert len(said) == 1 and said[0].startswith(f"run {run_id} stalled: no output for ")


def test_the_watch_never_marks_a_run_that_is_not_running(home: Path, tmp_path: Path) -> None:
    queue("q", {"stall_after": 1})
    run_id = launch("q", make_script(tmp_path / "c", "main.py", "pass\n").parent)
    store = Store(home)
    watch = StallWatch(store, lambda line: None, agent_id="agent-x", hooks=[])
    active = {run_id: _active(run_id)}
    watch.check(active, lambda a, r: None)  # queued
    assert store.runs.claim(run_id, "agent-x", 600) is not None
    move(store, run_id, State.BUILDING, agent_id="agent-x", expect=frozenset({State.CLAIMED}))
    log = home / "runs" / run_id / "output.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    os.utime(log, (time.time() - 100, time.time() - 100))
    for watch_again in (watch, StallWatch(store, lambda line: None, agent_id="agent-x")):
        watch_again.check(active, lambda a, r: None)
    assert store.runs.get(run_id)["stalled_at"] is None
    assert not [e for e in store.runs.events(run_id) if "stalled" in (e["message"] or "")]


def test_a_run_being_stopped_never_has_the_loop_wake_for_its_watch(
    home: Path, tmp_path: Path
) -> None:
    """A run that stops (cancelled, past its max_run_time) during its grace: its look,
    overdue, must not keep waking the agent's loop at once, pass after pass."""
    run_id = _running(home, tmp_path, devices=[], silent_s=0)
    watch = StallWatch(Store(home), lambda line: None, agent_id="agent-x", hooks=[])
    active = _active(run_id)
    watch.check({run_id: active}, lambda a, r: None)
    due = watch.next_check()
    assert due is not None and due > time.monotonic()  # watched: due when it could stall
    active.stop_reason = "cancelled"
    watch.check({run_id: active}, lambda a, r: None)
    assert watch.next_check() is None


def test_nvml_reads_the_use_of_a_real_gpu() -> None:
    from launchctl.gpus.usage import busiest, utilization

    try:
        import pynvml

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
    except Exception:
        assert utilization([0]) is None and busiest([0]) is None  # no NVML: judged by output
        pytest.skip("no NVML here (no NVIDIA driver or GPU): the real GPU reading is not tested")
    found = utilization(range(count))
    assert found is not None and sorted(found) == list(range(count))
    assert all(0 <= v <= 100 for v in found.values())
    assert busiest([0]) == found[0]
