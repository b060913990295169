"""GPU scheduling: each run gets its own devices, from a configured list (no GPU needed).

The history checks read the event log: a run holds its devices from its ``queued ->
claimed`` event (whose message names them) to its first event out of the held states,
which is the transaction that frees them.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from launchctl.gpus import devices as disc
from launchctl.gpus.policy import (
    Ask,
    Candidate,
    Slot,
    parse_ask,
    plan,
    slots_for,
    would_fit,
)
from launchctl.launch import LaunchRequest, prepare_spec, submit
from launchctl.runners.base import Launch
from launchctl.store import Store
from tests.conftest import BUSYBOX, StartAgent, cli, cli_json, make_script, wait_for

HELD = {"claimed", "building", "starting", "running"}
GPU_QUEUE = {
    "resource_args": {"local-process": {"gpus": "{{gpus}}"}},
    "template_variables": {"gpus": {"type": "integer", "minimum": 0, "maximum": 8, "default": 1}},
}


# -- helpers -------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def configured_gpus_only(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Schedule the --gpus lists as given, even on a machine with GPUs (but for NVML tests)."""
    if "nvml" not in request.node.name:
        monkeypatch.setenv(disc.DISCOVERY_ENV, "off")


@pytest.fixture
def job(tmp_path: Path) -> Path:
    """A job that prints the GPUs it sees and sleeps for its run config's ``sleep``; with
    ``until`` (a path), it ends only once that file exists (at most 120 s)."""
    return make_script(
        tmp_path / "gpujob",
        "train.py",
        "import json, os, time\n"
        "cfg = json.loads(os.environ.get('WANDB_CONFIG') or '{}')\n"
        "print('visible=' + os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>'))\n"
        "print('order=' + os.environ.get('CUDA_DEVICE_ORDER', '<unset>'))\n"
        "time.sleep(float(cfg.get('sleep', 0)))\n"
        "end = time.monotonic() + 120\n"
        "while cfg.get('until') and not os.path.exists(cfg['until']) and time.monotonic() < end:\n"
        "    time.sleep(0.05)\n",
    ).parent


def make_queue(name: str = "gpu", **extra: Any) -> None:
    cli("queue", "create", name, "--config", json.dumps({**GPU_QUEUE, **extra}), check=True)


def enqueue(
    store: Store,
    job: Path,
    gpus: int,
    sleep: float = 0.0,
    queue: str = "gpu",
    until: Path | None = None,
) -> str:
    req = LaunchRequest(
        queue=queue,
        uri=str(job),
        entry_point="python train.py",
        set_vars=[f"gpus={gpus}"],
        sets=[f"sleep={sleep}"] + ([f"until={until}"] if until is not None else []),
    )
    return str(submit(store, prepare_spec(req))["id"])


@dataclass
class Hold:
    run_id: str
    devices: list[int]
    start: float
    end: float


def holds(store: Store) -> list[Hold]:
    """Who held which GPUs when, from the event log alone."""
    out: list[Hold] = []
    open_: dict[str, Hold] = {}
    for ev in store.runs.events():
        msg = ev["message"] or ""
        if ev["from_state"] == "queued" and ev["to_state"] == "claimed":
            got = re.match(r"GPUs ([\d,]+)$", msg)
            devices = [int(i) for i in got.group(1).split(",")] if got else []
            open_[ev["run_id"]] = Hold(ev["run_id"], devices, ev["at"], float("inf"))
        elif ev["run_id"] in open_ and ev["to_state"] not in HELD:
            hold = open_.pop(ev["run_id"])
            hold.end = ev["at"]
            out.append(hold)
    return out + list(open_.values())


def max_holders(history: list[Hold]) -> dict[int, int]:
    """For each device, the most runs that held it at one moment."""
    points = sorted(
        [(h.start, 1, d) for h in history for d in h.devices]
        + [(h.end, -1, d) for h in history for d in h.devices],
        key=lambda p: (p[0], p[1]),  # a free at the same instant comes before a claim
    )
    now: dict[int, int] = {}
    most: dict[int, int] = {}
    for _, delta, device in points:
        now[device] = now.get(device, 0) + delta
        most[device] = max(most.get(device, 0), now[device])
    return most


def idle_while_a_run_fits(
    history: list[Hold], launched: dict[str, float], asks: dict[str, int], devices: list[int]
) -> list[tuple[float, float]]:
    """The spans in which a waiting run would have fitted on the free GPUs, longest first."""
    times = sorted({h.start for h in history} | {h.end for h in history if h.end < float("inf")})
    starts = {h.run_id: h.start for h in history}
    spans = []
    for begin, end in itertools.pairwise(times):
        held = [h for h in history if h.start <= begin < h.end]
        slots = slots_for(
            devices,
            [{"idx": d, "run_id": h.run_id, "sharing": 1} for h in held for d in h.devices],
            [],
        )
        waiting = [r for r in asks if launched[r] <= begin < starts.get(r, float("inf"))]
        if any(would_fit(Ask(count=asks[r]), slots) for r in waiting):
            spans.append((begin, end))
    return sorted(spans, key=lambda s: s[0] - s[1])


def launched_at(store: Store) -> dict[str, float]:
    return {e["run_id"]: e["at"] for e in store.runs.events() if e["from_state"] is None}


# -- the policy, as pure functions ---------------------------------------------------------
def test_parse_ask_reads_counts_all_and_device_lists() -> None:
    assert parse_ask(None).none and parse_ask("0").none
    assert parse_ask(2) == Ask(count=2)
    assert parse_ask("device=1,3") == Ask(count=2, exact=(1, 3))
    assert parse_ask("all").every and parse_ask("all").size(4) == 4
    assert str(parse_ask("device=1,3")) == "GPUs 1,3" and str(parse_ask(1)) == "1 GPU"


def test_a_run_gets_free_devices_first_then_the_least_loaded() -> None:
    slots = [Slot(0, runs=["a"]), Slot(1), Slot(2, runs=["b"]), Slot(3)]
    got = plan([Candidate("r", Ask(count=2))], slots, backfill_s=60)
    assert (got.run_id, got.devices) == ("r", [1, 3])


def test_smaller_runs_pass_a_big_run_only_within_the_backfill_bound() -> None:
    busy = [Slot(0, runs=["a"]), Slot(1), Slot(2), Slot(3)]
    big = Candidate("big", Ask(count=4), waited_s=10)
    small = Candidate("small", Ask(count=1), waited_s=5)
    # Within the bound: the small run goes ahead on a free GPU.
    early = plan([big, small], [Slot(s.index, list(s.runs)) for s in busy], backfill_s=60)
    assert (early.run_id, early.reserve) == ("small", {})
    # Past it: the big run's GPUs are reserved, and nothing else may take them.
    late = plan(
        [Candidate("big", Ask(count=4), waited_s=61), small],
        [Slot(s.index, list(s.runs)) for s in busy],
        backfill_s=60,
    )
    assert late.run_id is None and late.reserve == {"big": [0, 1, 2, 3]}


def test_a_reservation_leaves_the_other_devices_to_smaller_runs() -> None:
    slots = [Slot(0, runs=["a"]), Slot(1, runs=["b"]), Slot(2), Slot(3, runs=["c"])]
    got = plan(
        [Candidate("big", Ask(count=2), waited_s=100), Candidate("small", Ask(count=1))],
        slots,
        backfill_s=60,
    )
    # GPU 2 is free and GPU 0 the lowest of the busy ones: both are held for the big run.
    assert got.reserve == {"big": [0, 2]}
    assert got.run_id is None  # GPUs 1 and 3 are busy; the small run waits for one of them
    slots[1].runs.clear()
    again = plan([Candidate("small", Ask(count=1))], slots, backfill_s=60)
    assert (again.run_id, again.devices) == ("small", [1])


def test_a_reserved_run_starts_on_its_devices_once_they_drain() -> None:
    slots = [Slot(0, reserved_for="big"), Slot(1, reserved_for="big"), Slot(2), Slot(3)]
    got = plan([Candidate("big", Ask(count=2), waited_s=100)], slots, backfill_s=60)
    assert (got.run_id, got.devices) == ("big", [0, 1])


def test_sharing_allows_n_runs_per_device_and_never_mixes_with_an_exclusive_run() -> None:
    slots = [Slot(0, runs=["a"], limit=2), Slot(1, runs=["b"], limit=1)]
    shared = plan([Candidate("s", Ask(count=1), sharing=2)], slots, backfill_s=60)
    assert shared.devices == [0]  # GPU 1 holds a run that does not share
    exclusive = plan([Candidate("x", Ask(count=1), sharing=1)], slots, backfill_s=60)
    assert exclusive.run_id is None
    slots[0].runs.append("s")
    assert plan([Candidate("t", Ask(count=1), sharing=2)], slots, backfill_s=60).run_id is None


def test_a_device_used_outside_launchctl_counts_as_busy() -> None:
    slots = slots_for([0, 1], [], [], used_mb={0: 5000, 1: 300}, busy_mb=1024)
    assert [s.external for s in slots] == [True, False]
    got = plan([Candidate("r", Ask(count=1))], slots, backfill_s=60)
    assert got.devices == [1]
    # Our own run's memory is not someone else's use.
    ours = slots_for([0], [{"idx": 0, "run_id": "r", "sharing": 2}], [], used_mb={0: 9000})
    assert not ours[0].external


def test_specific_devices_and_all() -> None:
    slots = [Slot(0), Slot(1, runs=["a"]), Slot(2), Slot(3)]
    exact = plan([Candidate("r", parse_ask("device=0,2"))], slots, backfill_s=60)
    assert exact.devices == [0, 2]
    every = plan([Candidate("r", parse_ask("all"))], slots, backfill_s=60)
    assert every.run_id is None
    elsewhere = plan([Candidate("r", parse_ask("device=7"))], slots, backfill_s=0)
    assert elsewhere.run_id is None and not elsewhere.reserve  # not this agent's to hold


def test_gpu_lists_and_nvidia_smi_output_are_parsed() -> None:
    assert disc.parse_list("0,1,2,3") == [0, 1, 2, 3] == disc.parse_list("0-3")
    assert disc.parse_list("none") is None
    with pytest.raises(Exception, match="--gpus expects"):
        disc.parse_list("a,b")
    assert disc.parse_list("3,1,0-2") == [3, 1, 0, 2]  # in the order given, each once
    assert disc.parse_list("1023") == [1023]
    with pytest.raises(Exception, match="from 0 to 1023"):  # was quadratic: a hang at start
        disc.parse_list("0-2000000")
    found = disc.parse_smi(
        "0, NVIDIA H100 80GB HBM3, 81559, 4, GPU-aaa\n"
        "1, NVIDIA H100 80GB HBM3, 81559, [N/A], GPU-b\n"
    )
    assert [(d.index, d.name, d.memory_mb, d.used_mb) for d in found] == [
        (0, "NVIDIA H100 80GB HBM3", 81559, 4),
        (1, "NVIDIA H100 80GB HBM3", 81559, None),
    ]
    with pytest.raises(Exception, match="no GPU 5 on this machine"):
        disc.select(found, [5])
    assert [d.name for d in disc.select([], [2, 3])] == ["(configured)", "(configured)"]


# -- the agent, against a configured device list --------------------------------------------
def test_done_when_ten_runs_on_four_gpus_never_share_and_never_idle(
    store: Store, job: Path
) -> None:
    """The issue's "done when": 10 runs asking 1, 2 and 4 GPUs through `--gpus 0,1,2,3`."""
    make_queue()
    asks = [1, 2, 4, 1, 1, 2, 4, 2, 1, 1]
    sleeps = [0.8, 1.2, 0.6, 1.0, 0.7, 0.9, 0.5, 0.8, 1.1, 0.6]
    ids = {enqueue(store, job, g, s): g for g, s in zip(asks, sleeps, strict=True)}
    proc = cli("agent", "-q", "gpu", "--gpus", "0,1,2,3", "--burst", check=True, timeout=120)
    assert "max_jobs 4" in proc.stderr
    for index in range(4):
        assert re.search(rf"GPU {index}\s+\(configured\)\s+-\s+free", proc.stderr)
    assert all(store.runs.state(r) == "finished" for r in ids)
    history = holds(store)
    assert sorted(len(h.devices) for h in history) == sorted(asks)
    assert max(max_holders(history).values()) == 1  # no GPU held by two runs at once
    assert set(max_holders(history)) == {0, 1, 2, 3}
    idle = idle_while_a_run_fits(history, launched_at(store), ids, [0, 1, 2, 3])
    # Every GPU is busy whenever a waiting run would fit, but for the instant between a
    # run's end and the claim in the same pass of the agent.
    assert not idle or idle[0][1] - idle[0][0] < 0.5, idle[:3]
    for run_id, asked in ids.items():
        run = store.runs.get(run_id)
        assert len(run["devices"]) == asked
        log = (store.run_dir(run_id) / "output.log").read_text()
        assert f"visible={','.join(str(d) for d in run['devices'])}\n" in log


def test_no_gpu_is_handed_out_twice_by_agents_claiming_at_once(store: Store, job: Path) -> None:
    make_queue()
    asks = [1, 2, 4, 1, 2, 1, 1, 4, 2, 1, 1, 2, 1, 4, 1, 2]
    for i, g in enumerate(asks):
        enqueue(store, job, g, 0.2 + 0.1 * (i % 4))
    # Two runs at most per agent: three agents want more GPUs than there are.
    command = [sys.executable, "-m", "launchctl", "agent", "-q", "gpu", "--gpus", "0,1,2,3"]
    agents = [
        subprocess.Popen(
            [*command, "-j", "2", "--burst"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for agent in agents:
        _, err = agent.communicate(timeout=180)
        assert agent.returncode == 0, err
    history = holds(store)
    assert len(history) == len(asks)
    assert len({e["agent_id"] for e in store.runs.events() if e["to_state"] == "claimed"}) > 1
    assert max(max_holders(history).values()) == 1
    assert store.gpus.allocations() == []


def test_a_big_run_is_not_starved_by_a_stream_of_small_ones(
    store: Store, job: Path, tmp_path: Path, start_agent: StartAgent
) -> None:
    make_queue()
    # The first run ends on its own; the second holds GPU 1 until the test releases it. So
    # when the first ends, the big run has waited past its 1 s backfill bound (it was queued
    # before the agent started, 1.5 s before) and still cannot start: that pass must reserve
    # GPUs 0,1 for it, whatever the machine's load. (Ending the second on a timer instead
    # left it to chance whether a pass came between the two ends: when both ended before
    # the next pass, the big run started with no reservation and no note.)
    release = tmp_path / "release"
    first = [enqueue(store, job, 1, 1.5), enqueue(store, job, 1, until=release)]
    big = enqueue(store, job, 2, 0.2)
    later = [enqueue(store, job, 1, 1.5) for _ in range(4)]
    agent = start_agent("-q", "gpu", "--gpus", "0,1", "--gpu-backfill-s", "1", "--burst")

    def notes() -> list[str]:
        return [e["message"] for e in store.runs.events(big) if e["to_state"] == "queued"]

    reserved = "GPUs 0,1 reserved: it waited past the backfill bound"
    wait_for(lambda: reserved in notes(), timeout=90, what="the big run's reservation")
    # GPU 0 is free but held for the big run: no run behind it took it.
    assert store.runs.state(first[0]) == "finished"
    assert [(a["idx"], a["run_id"]) for a in store.gpus.allocations()] == [(1, first[1])]
    assert [(r["idx"], r["run_id"]) for r in store.gpus.reservations()] == [(0, big), (1, big)]
    release.touch()
    assert agent.wait(timeout=120) == 0, agent.output()
    starts = {h.run_id: h.start for h in holds(store)}
    # Small runs behind it kept both GPUs busy, but once it had waited 1 s its GPUs were
    # held for it: it started when the first two ended, before any later run.
    assert all(starts[big] > starts[r] for r in first)
    assert all(starts[big] < starts[r] for r in later)
    assert [store.runs.state(r) for r in [*first, big, *later]] == ["finished"] * 7


def test_a_queue_with_gpu_sharing_puts_two_runs_on_each_gpu(store: Store, job: Path) -> None:
    make_queue("shared", gpu_sharing=2)
    ids = [enqueue(store, job, 1, 1.5, queue="shared") for _ in range(5)]
    cli("agent", "-q", "shared", "--gpus", "0,1", "-j", "8", "--burst", check=True, timeout=120)
    history = holds(store)
    assert max_holders(history) == {0: 2, 1: 2}
    by_run = {h.run_id: h for h in history}
    assert [by_run[r].devices for r in ids[:4]] == [[0], [1], [0], [1]]  # spread, then shared
    assert by_run[ids[4]].start >= min(by_run[r].end for r in ids[:4])
    assert cli("queue", "edit", "shared", "--config", '{"gpu_sharing": 0}').returncode != 0


def test_devices_come_back_after_an_agent_is_killed(
    store: Store, job: Path, start_agent: StartAgent
) -> None:
    make_queue()
    first = enqueue(store, job, 2, 2.0)
    second = enqueue(store, job, 2, 0.1)
    agent = start_agent("-q", "gpu", "--gpus", "0,1")
    wait_for(lambda: store.runs.state(first) == "running", what="first run to start")
    agent.proc.kill()  # SIGKILL: no chance to free anything
    agent.wait()
    assert [a["idx"] for a in store.gpus.allocations()] == [0, 1]
    assert store.runs.state(second) == "queued"
    start_agent("-q", "gpu", "--gpus", "0,1", "--resume-queues")
    wait_for(lambda: store.runs.state(second) == "finished", timeout=60, what="second run")
    assert store.runs.get(second)["devices"] == [0, 1]
    assert store.runs.state(first) in ("finished", "failed")
    assert store.gpus.allocations() == []


def test_devices_are_freed_when_a_run_fails_to_start_or_is_cancelled(
    store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    make_queue()
    code = make_script(tmp_path / "bad", "x.py", "").parent
    spec = prepare_spec(
        LaunchRequest(
            queue="gpu", uri=str(code), entry_point="no-such-cmd-xyz", set_vars=["gpus=2"]
        )
    )
    broken = submit(store, spec)["id"]
    cli("agent", "-q", "gpu", "--gpus", "0,1", "--burst", check=True, timeout=60)
    run = store.runs.get(broken)
    assert (run["state"], run["stage"], run["devices"]) == ("failed", "run", [0, 1])
    assert store.gpus.allocations() == []
    long = make_script(tmp_path / "long", "x.py", "import time; time.sleep(60)\n").parent
    spec = prepare_spec(
        LaunchRequest(queue="gpu", uri=str(long), entry_point="python x.py", set_vars=["gpus=1"])
    )
    running = submit(store, spec)["id"]
    start_agent("-q", "gpu", "--gpus", "0,1", "--grace", "1")
    wait_for(lambda: store.runs.state(running) == "running", what="run to start")
    assert len(store.gpus.allocations()) == 1
    cli("runs", "cancel", running, check=True)
    wait_for(lambda: store.runs.state(running) == "stopped", what="cancel")
    assert store.gpus.allocations() == []


def test_a_process_sees_only_its_own_gpus(store: Store, job: Path) -> None:
    make_queue()
    two = enqueue(store, job, 2)
    none = enqueue(store, job, 0)
    cli("agent", "-q", "gpu", "--gpus", "2,3,5", "--burst", check=True, timeout=60)
    log = (store.run_dir(two) / "output.log").read_text()
    assert "visible=2,3\n" in log and "order=PCI_BUS_ID\n" in log
    # A run that asked for none, on an agent that hands out GPUs, sees none.
    assert "visible=\n" in (store.run_dir(none) / "output.log").read_text()
    shown = cli_json("runs", "show", two)
    assert shown["devices"] == [2, 3]
    assert "gpus:       2,3" in cli("runs", "show", two, check=True).stdout


def test_gpus_command_shows_the_run_on_each_device(
    store: Store, tmp_path: Path, start_agent: StartAgent
) -> None:
    make_queue()
    long = make_script(tmp_path / "long", "x.py", "import time; time.sleep(60)\n").parent
    spec = prepare_spec(
        LaunchRequest(queue="gpu", uri=str(long), entry_point="python x.py", set_vars=["gpus=1"])
    )
    run_id = submit(store, spec)["id"]
    agent = start_agent("-q", "gpu", "--gpus", "0,1", "--grace", "1")
    wait_for(lambda: store.runs.state(run_id) == "running", what="run to start")
    shown = cli_json("gpus")
    assert [(g["index"], g["state"]) for g in shown] == [(0, "busy"), (1, "free")]
    assert shown[0]["runs"][0]["id"] == run_id and shown[1]["runs"] == []
    table = cli("gpus", check=True).stdout
    assert re.search(rf"0\s+\(configured\)\s+-\s+busy\s+{run_id}", table)
    assert "GPUs (configured): 2" in agent.output()


def test_launch_refuses_more_gpus_than_the_machine_has(store: Store, job: Path) -> None:
    make_queue()
    enqueue(store, job, 6)  # no agent has reported devices yet: nothing to refuse by
    cli("agent", "-q", "default", "--gpus", "0-3", "--burst", check=True)  # it reports 4
    refused = cli("launch", "-q", "gpu", "-u", str(job), "-E", "python train.py", "-v", "gpus=6")
    assert refused.returncode == 1
    assert "asks for 6 GPUs, but machine" in refused.stderr and "has 4 GPUs" in refused.stderr
    by_uuid = cli(
        "launch", "-q", "gpu", "-u", str(job), "-E", "python train.py",
        "-R", '{"local-process": {"gpus": "device=GPU-1234"}}',
    )  # fmt: skip
    assert by_uuid.returncode == 1 and "name devices by index" in by_uuid.stderr


def test_a_run_whose_gpus_no_longer_match_its_ask_fails_at_stage_agent(
    store: Store, job: Path
) -> None:
    from launchctl.agent import Agent, AgentOptions
    from launchctl.gpus.allocator import GpuOptions

    cli("queue", "create", "fixed", "--config",
        '{"resource_args": {"local-process": {"gpus": 1}}}', check=True)  # fmt: skip
    req = LaunchRequest(queue="fixed", uri=str(job), entry_point="python train.py")
    run_id = submit(store, prepare_spec(req))["id"]
    options = AgentOptions(gpus=GpuOptions(devices=disc.configured([0, 1])))
    agent = Agent(store, ["fixed"], options, say=lambda _line: None)
    agent.start()
    claimed = agent.gpus.claim(agent.queues[0]["id"], 60) if agent.gpus else None
    assert claimed is not None and claimed["devices"] == [0]
    # The admin raises the ask between the claim and the start: the agent refuses to run
    # it on one GPU, and says why.
    cli("queue", "edit", "fixed", "--config",
        '{"resource_args": {"local-process": {"gpus": 2}}}', check=True)  # fmt: skip
    agent.start_claimed(claimed)
    wait_for(lambda: (agent.run_once() or True) and not agent.busy, what="start to fail")
    run = store.runs.get(run_id)
    assert (run["state"], run["stage"]) == ("failed", "agent")
    assert "asks for 2 GPUs, but it was given GPUs 0" in run["reason"]
    assert store.gpus.allocations() == []


def test_container_options_ask_for_exactly_the_allocated_devices(tmp_path: Path) -> None:
    from launchctl.runners.local_container import container_options

    launch = Launch(
        run={"id": "r1", "queue_name": "q"}, entrypoint=["sh"], args=[], env={},
        workdir=tmp_path, log_path=tmp_path / "log", resource_args={"gpus": 2}, image="x",
        devices=["1", "3"],
    )  # fmt: skip
    (request,) = container_options(launch)["device_requests"]
    assert (request["DeviceIDs"], request["Count"]) == (["1", "3"], 0)
    launch.devices = []
    assert "device_requests" not in container_options(launch)


def test_a_real_container_is_created_with_a_request_for_its_devices(
    docker: Any, tmp_path: Path
) -> None:
    from launchctl.runners.local_container import container_options

    launch = Launch(
        run={"id": "gpu-create-test", "queue_name": "q"}, entrypoint=["true"], args=[], env={},
        workdir=tmp_path, log_path=tmp_path / "log", image=BUSYBOX, devices=["1", "3"],
    )  # fmt: skip
    container = docker.containers.create(**container_options(launch))
    container.reload()
    (request,) = container.attrs["HostConfig"]["DeviceRequests"]
    assert request["DeviceIDs"] == ["1", "3"]
    assert request["Capabilities"] == [["gpu"]]


def test_a_container_run_gets_its_devices_and_frees_them_when_it_cannot_start(
    store: Store, docker: Any
) -> None:
    cli("queue", "create", "box", "-r", "local-container", "--config",
        '{"resource_args": {"local-container": {"gpus": 2}}}', check=True)  # fmt: skip
    spec = prepare_spec(LaunchRequest(queue="box", docker_image=BUSYBOX, entry_point="true"))
    run_id = submit(store, spec)["id"]
    cli("agent", "-q", "box", "--gpus", "0,1,2,3", "--burst", check=True, timeout=120)
    run = store.runs.get(run_id)
    assert run["devices"] == [0, 1]  # the devices it was given, kept on the run
    # An engine with no GPU runtime refuses the device request (each engine in its own
    # words: Docker's "could not select device driver", Podman's CDI errors...): the run
    # fails at stage run saying the container did not start. One with a GPU runtime runs it.
    runtimes = docker.info().get("Runtimes") or {}
    if "nvidia" not in runtimes:
        assert (run["state"], run["stage"]) == ("failed", "run"), run
        assert run["reason"].startswith("the container did not start: "), run["reason"]
        assert len(run["reason"]) > len("the container did not start: ")  # the engine's why
    else:  # pragma: no cover - a host with the NVIDIA container runtime
        assert run["state"] in {"finished", "failed"}, run
    assert store.gpus.allocations() == []  # freed either way


# -- real GPUs: discovery through NVML and nvidia-smi ----------------------------------------
def _need_nvml() -> list[disc.Device]:
    found = disc.nvml_devices()
    if not found:
        reason = "no NVML library (pip install 'launchctl[gpu]')"
        try:
            import pynvml  # noqa: F401
        except ImportError:
            pytest.skip(reason)
        pytest.skip("no GPU here: NVML is installed but finds no device or no driver")
    return found


def test_nvml_discovery_finds_this_machines_gpus() -> None:
    found = _need_nvml()
    assert [d.index for d in found] == list(range(len(found)))
    for device in found:
        assert device.name and device.memory_mb and device.memory_mb > 1024
        assert device.uuid and device.uuid.startswith("GPU-")
        assert device.used_mb is not None and 0 <= device.used_mb <= device.memory_mb


def test_nvml_and_nvidia_smi_agree() -> None:
    found = _need_nvml()
    smi = disc.smi_devices()
    if smi is None:
        pytest.skip("nvidia-smi is not on PATH here")
    assert [(d.index, d.name, d.uuid) for d in smi] == [(d.index, d.name, d.uuid) for d in found]
    assert [d.memory_mb for d in smi] == [d.memory_mb for d in found]


def test_nvml_agent_schedules_the_gpus_it_finds(store: Store, job: Path) -> None:
    found = _need_nvml()
    make_queue()
    run_id = enqueue(store, job, 1)
    proc = cli("agent", "-q", "gpu", "--burst", check=True, timeout=60)
    assert "GPUs (nvml)" in proc.stderr
    assert re.search(rf"GPU 0\s+{re.escape(found[0].name)}\s+{found[0].memory_mb} MiB", proc.stderr)
    assert "visible=0\n" in (store.run_dir(run_id) / "output.log").read_text()
    shown = cli_json("gpus")
    assert [g["name"] for g in shown] == [d.name for d in found]
    assert all(g["used_mb"] is not None for g in shown)


def test_nvml_cuda_sees_only_the_gpus_a_run_was_given(store: Store, tmp_path: Path) -> None:
    """On a real GPU: CUDA itself counts the run's GPUs (PyTorch, where it is installed)."""
    _need_nvml()
    pytest.importorskip("torch", reason="PyTorch is not installed here")
    code = make_script(
        tmp_path / "cuda",
        "count.py",
        "import torch\nprint('cuda_devices=%d' % torch.cuda.device_count())\n",
    ).parent
    make_queue()
    ids = {}
    for gpus in (1, 0):
        req = LaunchRequest(
            queue="gpu", uri=str(code), entry_point="python count.py", set_vars=[f"gpus={gpus}"]
        )
        ids[gpus] = submit(store, prepare_spec(req))["id"]
    cli("agent", "-q", "gpu", "--burst", check=True, timeout=180)
    for gpus, run_id in ids.items():
        assert store.runs.state(run_id) == "finished"
        log = (store.run_dir(run_id) / "output.log").read_text()
        assert f"cuda_devices={gpus}\n" in log
