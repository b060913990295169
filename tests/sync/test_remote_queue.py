"""W&B run queues (issue 13): `launch --remote-queue`, `agent --remote-queue`, the outbox.

W&B's own client (0.31.0, ``wandb.sdk.launch.api.LaunchApi``) is the judge where it can be:
it pushes the items launchctl's agent pulls, and pops what `launch --remote-queue` pushed.
The stand-in server (tests/sync/standin) holds the queues and records every call.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StartAgent, cli, cli_json, make_script, wait_for
from tests.sync.conftest import wandb_client_env
from tests.sync.standin import WandbStandIn

ENTITY, PROJECT = "team", "model-registry"
TARGET = f"{ENTITY}/{PROJECT}/cpu"


@pytest.fixture
def server(wandb_server: WandbStandIn, monkeypatch: pytest.MonkeyPatch, home: Path) -> WandbStandIn:
    """The stand-in with a W&B queue ``team/model-registry/cpu``, and this test's
    launchctl pointed at it; the local queue ``cpu`` and a job ``hello`` that prints."""
    wandb_server.add_queue(ENTITY, PROJECT, "cpu")
    for key, value in wandb_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LAUNCHCTL_SYNC_RETRIES", "0")
    monkeypatch.setenv("LAUNCHCTL_SYNC_TIMEOUT", "3")
    monkeypatch.setenv("LAUNCHCTL_REMOTE_POLL_S", "0.2")
    code = home.parent / "hello"
    make_script(code, "train.py", "import os\nprint('hello from', os.environ['WANDB_RUN_ID'])\n")
    cli("job", "create", "code", str(code), "-E", "python train.py", "-n", "hello", check=True)
    cli("queue", "create", "cpu", check=True)
    return wandb_server


def official(server: WandbStandIn, tmp: Path, code: str) -> Any:
    """Run ``code`` with W&B's own client aimed at the stand-in; what it prints last, as JSON."""
    env = wandb_client_env(server, tmp / "wandb-client")
    out = subprocess.run(
        [sys.executable, "-c", "import json, wandb\n"
         "from wandb.sdk.launch.api import LaunchApi\napi = LaunchApi()\n" + code],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def official_push(server: WandbStandIn, tmp: Path, spec: dict[str, Any], **kw: Any) -> str:
    """W&B's ``push_to_run_queue_by_name``, as `wandb launch -q` calls it; the item id."""
    tv = kw.get("template_variables")
    result = official(
        server, tmp,
        f"r = api.push_to_run_queue_by_name({ENTITY!r}, {PROJECT!r}, 'cpu',"
        f" {json.dumps(spec)!r}, {tv!r}, {kw.get('priority')!r})\nprint(json.dumps(r))",
    )  # fmt: skip
    return str(result["runQueueItemId"])


def remote_rows(home: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(home / "launchctl.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM remote_items ORDER BY id")]
    finally:
        conn.close()


def outbox(home: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(home / "launchctl.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM sync_outbox ORDER BY id")]
    finally:
        conn.close()


def run_of(run_id: str) -> dict[str, Any]:
    return dict(cli_json("runs", "show", run_id))


def spec_hello(**overrides: Any) -> dict[str, Any]:
    return {"job": "hello", "entity": ENTITY, "project": "demo", "author": "someone-else",
            "overrides": {"run_config": {"lr": 0.25}, **overrides}}  # fmt: skip


# -- pulling: W&B's client pushes, launchctl's agent runs ------------------------------------


def test_an_item_wandbs_client_pushed_is_pulled_run_as_a_local_run_and_acked(
    server: WandbStandIn, start_agent: StartAgent, tmp_path: Path, home: Path
) -> None:
    item_id = official_push(server, tmp_path, spec_hello())
    agent = start_agent("--remote-queue", TARGET)
    item = wait_for(
        lambda: (i := server.item(item_id)) is not None and i.state == "CLAIMED" and i,
        what="the item acked",
    )
    run_id = item.associated_run_id
    assert run_id and len(run_id) == 8  # the local run's id is the W&B run name
    listed = {r["id"]: r for r in cli_json("runs", "list")}
    assert run_id in listed and listed[run_id]["queue_name"] == "cpu"
    done = wait_for(lambda: (r := run_of(run_id))["state"] == "finished" and r, what="finished")
    assert done["entity"] == ENTITY and done["project"] == "demo"
    assert done["spec"]["overrides"]["run_config"] == {"lr": 0.25}
    assert f"hello from {run_id}" in cli("logs", run_id, check=True).stdout
    # The agent registered for the queue, said RUNNING while the run ran and POLLING after.
    (registered,) = server.agents
    assert registered.queue_ids == [server.queue(ENTITY, PROJECT, "cpu").id]  # type: ignore[union-attr]

    def running_then_polling() -> bool:
        seen = list(registered.statuses)
        return "RUNNING" in seen and "POLLING" in seen[seen.index("RUNNING") :]

    wait_for(running_then_polling, what="RUNNING then POLLING")
    agent.stop()
    assert registered.statuses[-1] == "KILLED"
    assert [r["direction"] for r in remote_rows(home)] == ["pulled"]
    # The remote pusher is kept as a note; the run's author is the agent's user, who vouches.
    events = " ".join(e["message"] or "" for e in run_of(run_id)["events"])
    assert f"item {item_id}" in events and "pushed by someone-else" in events


def test_the_items_run_is_pushed_as_a_wandb_run_when_it_ends(
    server: WandbStandIn, start_agent: StartAgent, tmp_path: Path
) -> None:
    """With a local entity named like the W&B one (the agent's user a member), the run of an
    item shows on the server once it ends, without a `launchctl sync`; W&B's Api reads it."""
    cli("team", "create", ENTITY, check=True)
    cli("queue", "create", "teamq", "-e", ENTITY, check=True)
    code = str(tmp_path / "hello")
    cli("job", "create", "code", code, "-E", "python train.py", "-n", "hello", "-e", ENTITY,
        check=True)  # fmt: skip
    item_id = official_push(server, tmp_path, spec_hello())
    start_agent("--remote-queue", f"{TARGET}=teamq")
    run_id = wait_for(
        lambda: (i := server.item(item_id)) is not None and i.associated_run_id,
        what="acked",
    )
    wait_for(lambda: server.run(ENTITY, "demo", run_id) is not None and
             server.run(ENTITY, "demo", run_id).state == "finished",  # type: ignore[union-attr]
             what="the W&B run finished on the server")  # fmt: skip
    got = official(
        server, tmp_path,
        f"r = wandb.Api().run('{ENTITY}/demo/{run_id}')\n"
        "print(json.dumps({'state': r.state, 'lr': r.config.get('lr')}))",
    )  # fmt: skip
    assert got == {"state": "finished", "lr": 0.25}


def test_agent_sync_pushes_local_runs_in_the_background(
    server: WandbStandIn, start_agent: StartAgent
) -> None:
    agent = start_agent("-q", "cpu", "--sync", "--sync-interval", "0.3")
    run_id = cli("launch", "-q", "cpu", "-j", "hello", check=True).stdout.strip()
    found = wait_for(
        lambda: next((r for r in server.runs if r.name == run_id and r.state == "finished"), None),
        what="the run on the server",
    )
    assert found.exitcode == 0
    assert "sync: every 0.3 s" in agent.output()


def test_an_item_that_cannot_run_here_is_failed_with_its_stage_and_reason(
    server: WandbStandIn, start_agent: StartAgent, tmp_path: Path
) -> None:
    cases = {
        "no-such-job": {**spec_hello(), "job": "no-such-job"},
        "list of strings": {**spec_hello(), "overrides": {"args": "--fast"}},
        "git URL": {"uri": "/etc", "entity": ENTITY, "overrides": {"entry_point": ["ls"]}},
        "nothing to launch": {"entity": ENTITY},
        "must be an object": {"job": "hello", "overrides": ["x"]},
    }
    items = {words: official_push(server, tmp_path, spec) for words, spec in cases.items()}
    fine = official_push(server, tmp_path, {"job": "hello"})  # no overrides at all: runs
    agent = start_agent("--remote-queue", TARGET)
    for words, item_id in items.items():
        item = wait_for(
            lambda i=item_id: (it := server.item(i)) is not None and it.state == "FAILED" and it,
            what=f"the item failed ({words})",
        )
        assert item.error_stage == "agent" and item.associated_run_id is None
        assert words in (item.error_message or ""), item.error_message
    ok = wait_for(lambda: (i := server.item(fine)) is not None and i.associated_run_id, what="ok")
    wait_for(lambda: run_of(ok)["state"] == "finished", what="the good item's run finished")
    assert [r["id"] for r in cli_json("runs", "list")] == [ok]
    assert "Traceback" not in agent.output() and "internal error" not in agent.output()


def test_a_run_that_fails_before_it_starts_fails_its_item_at_that_stage(
    server: WandbStandIn, start_agent: StartAgent, tmp_path: Path
) -> None:
    # The local queue's admin allows no entry point override; the agent in secure_mode
    # fails such a run before it starts, at stage agent (W&B's _assert_secure).
    item_id = official_push(server, tmp_path, spec_hello(entry_point=["python", "-c", "0"]))
    start_agent("--remote-queue", TARGET, "-c", json.dumps({"secure_mode": True}))
    item = wait_for(
        lambda: (i := server.item(item_id)) is not None and i.state == "FAILED" and i,
        what="the item failed",
    )
    run_id = item.associated_run_id
    assert run_id  # acked first (it became a local run), then failed with the run's stage
    run = run_of(run_id)
    assert run["state"] == "failed" and run["started_at"] is None
    assert item.error_stage == run["stage"] == "agent"
    assert item.error_message and item.error_message == run["reason"].splitlines()[0][:500]


def test_a_run_whose_build_fails_fails_its_item_at_stage_build(
    server: WandbStandIn, start_agent: StartAgent, tmp_path: Path
) -> None:
    # A code job on a container queue needs an image built; this agent never builds.
    cli("queue", "create", "box", "-r", "local-container", check=True)
    item_id = official_push(server, tmp_path, spec_hello())
    start_agent("--remote-queue", f"{TARGET}=box", "-c", json.dumps({"builder": {"type": "noop"}}))
    item = wait_for(
        lambda: (i := server.item(item_id)) is not None and i.state == "FAILED" and i,
        what="the item failed",
    )
    run = run_of(item.associated_run_id or "")
    assert item.error_stage == run["stage"] == "build" and run["started_at"] is None
    assert "build" in (item.error_message or "")


def test_admin_keys_and_an_api_key_in_a_popped_spec_never_reach_the_local_run(
    server: WandbStandIn, start_agent: StartAgent, tmp_path: Path
) -> None:
    spec = {**spec_hello(), "resource_args": {"local-process": {"env": ["X=1"]}},
            "_wandb_api_key": "k" * 40, "builder": {"type": "noop"}}  # fmt: skip
    item_id = official_push(server, tmp_path, spec)
    start_agent("--remote-queue", TARGET)
    item = wait_for(
        lambda: (i := server.item(item_id)) is not None and i.associated_run_id and i,
        what="the item acked",
    )
    run = run_of(item.associated_run_id)
    for key in ("resource_args", "_wandb_api_key", "builder"):
        assert key not in run["spec"]
    assert "k" * 40 not in json.dumps(run)


def test_a_missing_local_queue_or_a_bad_key_refuses_the_agent_in_one_line(
    server: WandbStandIn, home: Path
) -> None:
    proc = cli("agent", "--remote-queue", f"{ENTITY}/{PROJECT}/gpu")
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "local queue 'gpu'" in proc.stderr
    proc = cli("agent", "--remote-queue", TARGET, env={"WANDB_API_KEY": "x" * 40})
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "refused" in proc.stderr and "x" * 40 not in proc.stderr
    proc = cli("agent", "--remote-queue", "team/cpu")
    assert proc.returncode == 1 and "ENTITY/PROJECT/QUEUE" in proc.stderr


def test_an_item_given_again_is_never_a_second_run(
    server: WandbStandIn, start_agent: StartAgent, tmp_path: Path, home: Path
) -> None:
    """W&B's server gives an item back to its queue when it gets no ack in time: the agent
    that has it (restarted or not) acks it again and never runs it twice."""
    item_id = official_push(server, tmp_path, spec_hello())
    agent = start_agent("--remote-queue", TARGET)
    first = wait_for(
        lambda: (i := server.item(item_id)) is not None and i.associated_run_id,
        what="acked",
    )
    agent.signal(signal.SIGKILL)
    agent.wait()
    with server.state.lock:  # the server takes the item back, as after a lost ack
        it = server.state.items[item_id]
        it.state, it.associated_run_id = "PENDING", None
    start_agent("--remote-queue", TARGET, "--resume-queues")
    again = wait_for(
        lambda: (i := server.item(item_id)) is not None and i.associated_run_id,
        what="acked again",
    )
    assert again == first
    assert [r["id"] for r in cli_json("runs", "list")] == [first]
    assert len(remote_rows(home)) == 1


def test_offline_mid_way_the_ack_waits_in_the_outbox_and_local_queues_are_served(
    server: WandbStandIn, start_agent: StartAgent, tmp_path: Path, home: Path
) -> None:
    item_id = official_push(server, tmp_path, spec_hello())
    real_pop = server.state.pop

    def pop_then_go_offline(*args: Any) -> Any:
        item = real_pop(*args)
        if item is not None:
            server.cut_after(0)  # the network goes right after this answer
        return item

    server.state.pop = pop_then_go_offline  # type: ignore[method-assign]
    agent = start_agent("--remote-queue", TARGET)
    run_id = wait_for(
        lambda: next((r["run_id"] for r in remote_rows(home) if r["item_id"] == item_id), None),
        what="the item's local run",
    )
    assert server.item(item_id).state == "LEASED"  # type: ignore[union-attr]
    # The local run goes on, and so does a local launch into the queue.
    local = cli("launch", "-q", "cpu", "-j", "hello", check=True).stdout.strip()
    wait_for(lambda: run_of(run_id)["state"] == "finished", what="pulled run finished")
    wait_for(lambda: run_of(local)["state"] == "finished", what="local run finished")
    owed = [r for r in outbox(home) if r["sent_at"] is None]
    assert [(r["kind"], json.loads(r["payload"])["run_name"]) for r in owed] == [("ack", run_id)]
    assert agent.proc.poll() is None and "offline" in agent.output()
    server.state.pop = real_pop  # type: ignore[method-assign]
    server.start()
    item = wait_for(
        lambda: (i := server.item(item_id)) is not None and i.state == "CLAIMED" and i,
        what="the owed ack sent",
    )
    assert item.associated_run_id == run_id
    wait_for(lambda: all((r["sent_at"] or 0) > 0 for r in outbox(home)), what="outbox sent")
    assert server.ops().count("ackRunQueueItem") == 1


# -- pushing: launchctl pushes, W&B's client pops ---------------------------------------------


def test_launch_remote_queue_pushes_the_spec_wandbs_client_pops(
    server: WandbStandIn, tmp_path: Path, home: Path
) -> None:
    proc = cli("launch", "--remote-queue", TARGET, "-j", "hello", "--set", "lr=0.5",
               "-P", "high", "--name", "try-1", "-E", "python train.py --fast",
               "-v", "epochs=3")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    item_id = proc.stdout.strip()
    assert "pushed to W&B queue" in proc.stderr
    popped = official(
        server, tmp_path,
        f"print(json.dumps(api.pop_from_run_queue('cpu', entity={ENTITY!r}, project={PROJECT!r})))",
    )  # fmt: skip
    assert popped["runQueueItemId"] == item_id
    spec = (
        json.loads(popped["runSpec"]) if isinstance(popped["runSpec"], str) else popped["runSpec"]
    )
    assert spec["job"] == "hello" and spec["entity"] == ENTITY and spec["name"] == "try-1"
    assert spec["overrides"]["run_config"] == {"lr": 0.5}
    assert spec["overrides"]["entry_point"] == ["python", "train.py", "--fast"]
    assert "queue" not in spec and "template_variables" not in spec
    item = server.item(item_id)
    assert item is not None and item.priority == 1  # high, in W&B's numbers
    assert json.loads(item.template_variables or "{}") == {"epochs": 3}
    assert cli_json("runs", "list") == []  # nothing runs here


def test_launch_remote_queue_refusals_are_one_line_and_write_nothing(
    server: WandbStandIn, home: Path
) -> None:
    from tests.conftest import table_counts

    before = table_counts(home)
    cases = [
        (["--remote-queue", TARGET, "-u", str(home.parent / "hello"), "-E", "python x.py"], "-u"),
        (["--remote-queue", TARGET, "-j", "hello", "-q", "cpu"], "--queue"),
        (["--remote-queue", "team/cpu", "-j", "hello"], "ENTITY/PROJECT/QUEUE"),
        (["--remote-queue", f"{ENTITY}/{PROJECT}/nope", "-j", "hello"], "nope"),
        (["--remote-queue", TARGET, "-j", "hello"], "refused"),  # a bad key
    ]
    for args, words in cases:
        env = {"WANDB_API_KEY": "y" * 40} if words == "refused" else None
        proc = cli("launch", *args, env=env)
        assert proc.returncode == 1, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and words in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and "y" * 40 not in proc.stderr
    assert table_counts(home) == before
    assert not server.state.items


def test_an_offline_push_waits_in_the_outbox_and_one_sync_sends_it_once(
    server: WandbStandIn, home: Path
) -> None:
    server.stop()
    proc = cli("launch", "--remote-queue", TARGET, "-j", "hello", "--set", "lr=0.5")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and "offline" in proc.stderr and "outbox as #1" in proc.stderr
    assert [r["kind"] for r in outbox(home)] == ["push"]
    assert not server.state.items
    server.start()
    first = cli("sync", "--json")
    assert first.returncode == 0, first.stderr
    second = cli("sync", "--json")
    assert second.returncode == 0, second.stderr
    (item,) = server.state.items.values()
    assert json.loads(item.run_spec)["overrides"]["run_config"] == {"lr": 0.5}
    (row,) = outbox(home)
    assert row["sent_at"] and row["sent_at"] > 0
    assert [r["item_id"] for r in remote_rows(home)] == [item.id]
    assert server.ops().count("pushToRunQueueByName") == 1


def test_the_api_key_never_reaches_the_store_or_json(server: WandbStandIn, home: Path) -> None:
    server.stop()
    out = cli("launch", "--remote-queue", TARGET, "-j", "hello", "--json")
    assert out.returncode == 0
    assert server.api_key not in out.stdout + out.stderr
    assert server.api_key.encode() not in (home / "launchctl.db").read_bytes()
    wal = home / "launchctl.db-wal"
    assert not wal.exists() or server.api_key.encode() not in wal.read_bytes()
    assert os.environ["WANDB_API_KEY"] == server.api_key
