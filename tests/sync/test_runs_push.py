"""launchctl runs pushed as W&B runs (issue 13), with W&B's official client as the judge.

Runs are made through the real CLI; ``launchctl sync`` pushes them into the stand-in W&B
server (tests/sync/standin); ``wandb.Api()`` (wandb 0.31.0) reads them back: state,
config, summary and the output log. The stand-in's recorded requests show what was sent:
nothing twice, nothing lost, also when the network is cut mid-way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.conftest import cli, make_script, wait_for
from tests.sync.standin import WandbStandIn

FAST = {"LAUNCHCTL_SYNC_RETRIES": "0", "LAUNCHCTL_SYNC_BACKOFF": "0.01",
        "LAUNCHCTL_SYNC_TIMEOUT": "5"}  # fmt: skip
USER = os.environ.get("USER") or "tester"


def env(server: WandbStandIn, **extra: str) -> dict[str, str]:
    return {**server.env(), **FAST, **extra}


def launch(tmp_path: Path, body: str, *args: str, name: str = "job") -> str:
    """A direct launch of a script printing ``body``'s output; returns the run id."""
    folder = tmp_path / name
    make_script(folder, "main.py", body)
    proc = cli("launch", "-u", str(folder), "-E", "python main.py", "-p", "proj", *args)
    run = json.loads(cli("runs", "list", "--json", "-n", "1", check=True).stdout)[0]
    assert proc.returncode in (0, 1, 3, 130), proc.stderr
    return str(run["id"])


def entity_of(run_id: str) -> str:
    return str(json.loads(cli("runs", "show", run_id, "--json", check=True).stdout)["entity"])


def three_runs(tmp_path: Path) -> dict[str, str]:
    """A finished, a failed and a cancelled run; their ids by outcome."""
    finished = launch(
        tmp_path,
        "print('step 1 loss=0.5')\nprint('step 2 loss=0.25')\n",
        "--set", "lr=0.5", "--set", "epochs=2", name="ok",
    )  # fmt: skip
    failed = launch(
        tmp_path,
        "import sys\nprint('about to fail')\nsys.exit(3)\n",
        "--set", "lr=0.1", name="bad",
    )  # fmt: skip
    folder = tmp_path / "slow"
    make_script(folder, "main.py", "import time\nprint('waiting', flush=True)\ntime.sleep(60)\n")
    cli("launch", "-u", str(folder), "-E", "python main.py", "-p", "proj", "--async", check=True)
    cancelled = json.loads(cli("runs", "list", "--json", "-n", "1", check=True).stdout)[0]["id"]
    wait_for(lambda: "waiting" in log_of(cancelled), what="the slow run's first line")
    cli("runs", "cancel", cancelled, check=True)
    wait_for(lambda: state_of(cancelled) == "stopped", what="the cancel")
    return {"finished": finished, "failed": failed, "cancelled": cancelled}


def state_of(run_id: str) -> str:
    return str(json.loads(cli("runs", "show", run_id, "--json", check=True).stdout)["state"])


def log_of(run_id: str) -> str:
    return cli("logs", run_id).stdout


def sync(server: WandbStandIn, *args: str, **extra: str) -> Any:
    proc = cli("sync", *args, env=env(server, **extra))
    assert proc.returncode == 0, proc.stderr
    return proc


def requests_of(server: WandbStandIn) -> list[Any]:
    return [r for r in server.requests if r.kind != "telemetry"]


def snapshot(server: WandbStandIn) -> dict[Any, Any]:
    """What the server holds of each run, for comparing two servers."""
    out = {}
    for run in server.runs:
        meta = run.files.get("wandb-metadata.json")
        out[run.name] = {
            "state": run.state, "config": run.config, "summary": run.summary,
            "tags": run.tags, "job_type": run.job_type, "program": run.program,
            "display_name": run.display_name, "output": run.output_lines,
            "exitcode": run.exitcode, "metadata": meta is not None,
        }  # fmt: skip
    return out


def test_three_runs_read_back_by_wandbs_official_client(
    tmp_path: Path, wandb_server: WandbStandIn
) -> None:
    import wandb

    ids = three_runs(tmp_path)
    proc = sync(wandb_server)
    assert "synced 3 runs" in proc.stdout
    api = wandb.Api(overrides={"base_url": wandb_server.url}, api_key=wandb_server.api_key)
    states = {}
    for outcome, run_id in ids.items():
        run = api.run(f"{entity_of(run_id)}/proj/{run_id}")
        states[outcome] = run.state
        assert run.id == run_id
        assert run.summary["_runtime"] >= 0
        root = tmp_path / "download" / run_id
        # output.log as the server holds it (the stand-in lists only uploaded files to the
        # public API's files query; W&B's server also lists the streamed ones).
        remote = wandb_server.run(run.entity, run.project, run_id)
        assert remote is not None
        lines = remote.output_lines
        if outcome == "finished":
            assert run.config == {"lr": 0.5, "epochs": 2}
            assert [line.split(" ", 1)[1] for line in lines] == [
                "step 1 loss=0.5",
                "step 2 loss=0.25",
            ]
        elif outcome == "failed":
            assert run.config == {"lr": 0.1}
            assert lines[0].endswith(" about to fail")
        else:
            assert any(line.endswith(" waiting") for line in lines)
        # W&B's console line format: a UTC time stamp with microseconds, then the text.
        assert all(len(line.split(" ", 1)[0]) == 26 and line[10] == "T" for line in lines)
        meta = json.loads(run.file("wandb-metadata.json").download(
            root=str(root), replace=True).read())  # fmt: skip
        assert meta["startedAt"].endswith("Z") and meta["program"] == "python main.py"
        assert "code" not in json.dumps(meta)  # no path into the store
    assert states == {"finished": "finished", "failed": "failed", "cancelled": "killed"}
    jobs = {r.variables.get("jobType") for r in wandb_server.requests if r.op == "UpsertBucket"}
    assert jobs == {"launch"}


def test_two_syncs_in_a_row_send_nothing_the_second_time(
    tmp_path: Path, wandb_server: WandbStandIn
) -> None:
    launch(tmp_path, "print('a')\nprint('b')\n")
    sync(wandb_server)
    before = len(requests_of(wandb_server))
    assert before > 0
    proc = sync(wandb_server)
    assert "nothing to sync" in proc.stdout
    assert len(requests_of(wandb_server)) == before
    status = json.loads(cli("sync", "status", "--json", env=env(wandb_server)).stdout)
    assert status["owed"] == []


def test_a_sync_cut_mid_way_and_resumed_gives_the_same_server_state(
    tmp_path: Path, wandb_server: WandbStandIn
) -> None:
    ids = [launch(tmp_path, f"for i in range(40):\n    print('run {n} line', i)\n", name=f"j{n}")
           for n in range(3)]  # fmt: skip
    small = {"LAUNCHCTL_SYNC_CHUNK_BYTES": "400"}  # several log requests per run
    uncut = WandbStandIn(users={wandb_server.api_key: wandb_server.username}).start()
    try:
        sync(uncut, **small)
        per_run = [r for r in requests_of(uncut) if r.path.startswith("/files/")]
        chunks = len({json.dumps(r.body) for r in per_run}) // 3
        assert chunks >= 3
        # Viewer, the first run (upsert, CreateRunFiles, upload, its chunks), then the
        # second run's upsert, CreateRunFiles, upload and two chunks: cut mid-log.
        wandb_server.cut_after(1 + (3 + chunks) + 5)
        first = sync(wandb_server, **small)
        assert "offline" in first.stderr and "2 runs wait in the outbox" in first.stderr
        assert first.stderr.count("\n") == 1
        assert "Traceback" not in first.stderr
        second = wandb_server.run(entity_of(ids[1]), "proj", ids[1])
        assert second is not None and 0 < len(second.output_lines) < 40
        owed = json.loads(cli("sync", "status", "--json", env=env(wandb_server)).stdout)["owed"]
        assert {o["run"] for o in owed} and {o["run"] for o in owed} <= set(ids)
        wandb_server.start()
        sync(wandb_server, **small)
        assert snapshot(wandb_server) == snapshot(uncut)
        # Nothing sent twice: each log line went out once, each run was created once.
        streamed = [
            line
            for r in requests_of(wandb_server)
            if r.kind == "file_stream" and r.status == 200
            for line in ((r.body or {}).get("files", {}).get("output.log", {}).get("content", []))
        ]
        assert len(streamed) == 3 * 40
        assert sync(wandb_server).stdout.startswith("nothing to sync")
    finally:
        uncut.stop()


def test_a_running_run_sends_whole_lines_then_only_the_new_ones(
    tmp_path: Path, wandb_server: WandbStandIn
) -> None:
    go = tmp_path / "go"
    folder = tmp_path / "live"
    make_script(
        folder,
        "main.py",
        "import os, sys, time\n"
        "print('first', flush=True)\n"
        "sys.stdout.write('half'); sys.stdout.flush()\n"
        f"while not os.path.exists({str(go)!r}):\n    time.sleep(0.05)\n"
        "print(' done', flush=True)\nprint('last', flush=True)\n",
    )
    cli("launch", "-u", str(folder), "-E", "python main.py", "-p", "proj", "--async", check=True)
    run_id = json.loads(cli("runs", "list", "--json", "-n", "1", check=True).stdout)[0]["id"]
    wait_for(lambda: "half" in log_of(run_id), what="the run's first lines")
    sync(wandb_server)
    remote = wandb_server.run(entity_of(run_id), "proj", run_id)
    assert remote is not None and remote.state == "running"
    assert [line.split(" ", 1)[1] for line in remote.output_lines] == ["first"]
    assert "wandb-summary.json" not in str(remote.streams.keys())
    go.touch()
    wait_for(lambda: state_of(run_id) == "finished", what="the run's end")
    mark = len(wandb_server.requests)
    sync(wandb_server)
    remote = wandb_server.run(entity_of(run_id), "proj", run_id)
    assert remote is not None and remote.state == "finished"
    assert [line.split(" ", 1)[1] for line in remote.output_lines] == ["first", "half done", "last"]
    chunks = [
        r.body["files"]["output.log"]
        for r in wandb_server.requests[mark:]
        if r.kind == "file_stream" and "output.log" in (r.body or {}).get("files", {})
    ]
    assert [c["offset"] for c in chunks] == [1]
    assert [line.split(" ", 1)[1] for line in chunks[0]["content"]] == ["half done", "last"]
    assert not [r for r in wandb_server.requests[mark:] if r.op == "CreateRunFiles"]


def test_another_project_or_server_is_a_new_cursor(
    tmp_path: Path, wandb_server: WandbStandIn
) -> None:
    run_id = launch(tmp_path, "print('x')\n")
    entity = entity_of(run_id)
    sync(wandb_server)
    sync(wandb_server, "--project", "elsewhere")
    sync(wandb_server, "--entity", "lab", "--project", "elsewhere")
    names = sorted((r.entity, r.project) for r in wandb_server.runs)
    assert names == sorted([(entity, "proj"), (entity, "elsewhere"), ("lab", "elsewhere")])
    other = WandbStandIn(users={wandb_server.api_key: wandb_server.username}).start()
    try:
        sync(other)
        assert [(r.entity, r.project) for r in other.runs] == [(entity, "proj")]
    finally:
        other.stop()


def test_since_limits_the_runs_sent(tmp_path: Path, wandb_server: WandbStandIn) -> None:
    launch(tmp_path, "print('old')\n")
    sync(wandb_server, "--since", "2999-01-01")
    assert wandb_server.runs == []
    sync(wandb_server, "--since", "1d")
    assert len(wandb_server.runs) == 1


def test_only_runs_of_entities_the_user_is_a_member_of_are_sent(
    tmp_path: Path, wandb_server: WandbStandIn
) -> None:
    folder = tmp_path / "alice-job"
    make_script(folder, "main.py", "print('team secret')\n")
    cli("launch", "-u", str(folder), "-E", "python main.py", "-p", "proj",
        env={"LAUNCHCTL_USER": "alice"}, check=True)  # fmt: skip
    proc = cli("sync", env=env(wandb_server, LAUNCHCTL_USER="mallory"))
    assert proc.returncode == 0 and "nothing to sync" in proc.stdout
    assert wandb_server.runs == []
    assert cli("sync", env=env(wandb_server, LAUNCHCTL_USER="alice")).returncode == 0
    assert [r.entity for r in wandb_server.runs] == ["alice"]


def test_offline_nothing_is_sent_and_status_shows_what_waits(
    tmp_path: Path, wandb_server: WandbStandIn
) -> None:
    ids = {launch(tmp_path, "print('offline work')\n", name=f"w{n}") for n in range(2)}
    wandb_server.stop()
    proc = cli("sync", env=env(wandb_server))
    assert proc.returncode == 0
    assert proc.stderr.count("\n") == 1
    assert "2 runs wait in the outbox" in proc.stderr and "launchctl sync" in proc.stderr
    status = cli("sync", "status", env=env(wandb_server))
    assert status.returncode == 0
    for run_id in ids:
        assert run_id in status.stdout
    assert "upsert" in status.stdout and "1 log line" in status.stdout
    wandb_server.start()
    sync(wandb_server)
    assert {r.name for r in wandb_server.runs} == ids
    assert [r.op for r in wandb_server.requests].count("UpsertBucket") == 2


def test_a_log_with_a_carriage_return_keeps_what_the_terminal_showed(
    tmp_path: Path, wandb_server: WandbStandIn
) -> None:
    run_id = launch(
        tmp_path, "import sys\nsys.stdout.write('10%\\r50%\\r100%\\nnext\\n')\n", name="bar"
    )
    sync(wandb_server)
    remote = wandb_server.run(entity_of(run_id), "proj", run_id)
    assert remote is not None
    assert [line.split(" ", 1)[1] for line in remote.output_lines] == ["100%", "next"]


def test_a_huge_line_is_cut_as_wandb_cuts_it_and_a_long_progress_bar_shows_its_end(
    tmp_path: Path, wandb_server: WandbStandIn
) -> None:
    body = (
        "import sys\n"
        "sys.stdout.write('y' * 10000 + '\\n')\n"
        "sys.stdout.write(''.join(f'{i}%\\r' for i in range(100000)) + 'all done\\n')\n"
        "sys.stdout.write('z' * 200000)\n"  # no newline at the end: sent once the run ended
    )
    run_id = launch(tmp_path, body, name="long")
    sync(wandb_server)
    remote = wandb_server.run(entity_of(run_id), "proj", run_id)
    assert remote is not None
    texts = [line.split(" ", 1)[1] for line in remote.output_lines]
    assert texts == ["y" * 4096, "all done", "z" * 4096]
    status = json.loads(cli("sync", "status", "--json", env=env(wandb_server)).stdout)
    assert status["owed"] == []
