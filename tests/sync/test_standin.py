"""The stand-in W&B server, judged by W&B's own client (wandb 0.31.0 and its wandb-core).

If the official client reads back what was written through the wire operations, then the
stand-in answers in the shapes W&B's client reads; launchctl's sync tests rely on that.
The client runs in its own process, as a user's script would."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.sync.conftest import wandb_client_env
from tests.sync.standin import WandbStandIn

UPSERT = """
mutation UpsertBucket($name: String, $project: String, $entity: String, $config: JSONString,
                      $state: String, $displayName: String, $tags: [String!], $jobType: String,
                      $host: String, $program: String) {
  upsertBucket(input: {name: $name, modelName: $project, entityName: $entity, config: $config,
                       state: $state, displayName: $displayName, tags: $tags, jobType: $jobType,
                       host: $host, jobProgram: $program}) {
    bucket { id name displayName project { name entity { name } } }
    inserted
  }
}"""

CREATE_FILES = """
mutation CreateRunFiles($entity: String!, $project: String!, $run: String!,
                        $files: [String!]!) {
  createRunFiles(input: {entityName: $entity, projectName: $project, runName: $run,
                         files: $files}) {
    runID uploadHeaders files { name uploadUrl }
  }
}"""


def _call(
    server: WandbStandIn, path: str, body: Any, key: str | None = None, method: str = "POST"
) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    auth = base64.b64encode(f"api:{key or server.api_key}".encode()).decode()
    req = urllib.request.Request(
        server.url + path,
        data=data,
        method=method,
        headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


def _gql(server: WandbStandIn, query: str, variables: dict[str, Any], op: str, **kw: Any) -> Any:
    return _call(
        server, "/graphql", {"query": query, "variables": variables, "operationName": op}, **kw
    )


def _write_run(server: WandbStandIn, name: str, exitcode: int, steps: int = 3) -> None:
    """One run written as W&B's client writes it: upsert, stream, metadata file, complete."""
    status, answer = _gql(
        server,
        UPSERT,
        {
            "name": name,
            "project": "proj",
            "entity": "ent",
            "displayName": f"display-{name}",
            "config": json.dumps({"lr": {"value": 0.5}, "epochs": {"value": steps}}),
            "tags": ["launchctl"],
            "jobType": "launch",
            "host": "lab-1",
            "program": "train.py",
            "state": "running",
        },
        "UpsertBucket",
    )
    assert status == 200 and answer["data"]["upsertBucket"]["inserted"], answer
    rows = [json.dumps({"_step": i, "loss": 1.0 / (i + 1)}) for i in range(steps)]
    summary = json.dumps({"loss": 1.0 / steps, "best": 0.9})
    files = {
        "wandb-history.jsonl": {"offset": 0, "content": rows},
        "wandb-summary.json": {"offset": 0, "content": [summary]},
        "output.log": {"offset": 0, "content": ["epoch 1", "epoch 2"]},
    }
    assert _call(server, f"/files/ent/proj/{name}/file_stream", {"files": files})[0] == 200
    status, answer = _gql(
        server,
        CREATE_FILES,
        {"entity": "ent", "project": "proj", "run": name, "files": ["wandb-metadata.json"]},
        "CreateRunFiles",
    )
    url = answer["data"]["createRunFiles"]["files"][0]["uploadUrl"]
    metadata = json.dumps({"startedAt": "2024-05-01T12:00:00.000000", "host": "lab-1"}).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=metadata, method="PUT")) as resp:
        assert resp.status == 200
    done = {"complete": True, "exitcode": exitcode}
    assert _call(server, f"/files/ent/proj/{name}/file_stream", done)[0] == 200


def _client(server: WandbStandIn, tmp_path: Path, script: str) -> Any:
    """Run ``script`` with W&B's client aimed at the stand-in; it prints one JSON line last."""
    env = wandb_client_env(server, tmp_path / "wandb-client")
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


pytest.importorskip("wandb", reason="wandb is a test dependency: pip install -e '.[test]'")


def test_the_public_api_reads_runs_written_through_the_wire(
    wandb_server: WandbStandIn, tmp_path: Path
) -> None:
    _write_run(wandb_server, "run-ok", exitcode=0, steps=3)
    _write_run(wandb_server, "run-bad", exitcode=1, steps=2)
    seen = _client(
        wandb_server,
        tmp_path,
        """
import json, os, tempfile, wandb
api = wandb.Api(overrides={"base_url": os.environ["WANDB_BASE_URL"]},
                api_key=os.environ["WANDB_API_KEY"])
out = {}
for name in ("run-ok", "run-bad"):
    run = api.run(f"ent/proj/{name}")
    root = tempfile.mkdtemp()
    meta = run.file("wandb-metadata.json").download(root=root)
    meta.close()
    out[name] = {
        "state": run.state, "config": dict(run.config), "summary": dict(run.summary),
        "name": run.name, "tags": list(run.tags), "job_type": run.job_type,
        "history": run.history(pandas=False), "scan": list(run.scan_history()),
        "metadata": json.load(open(os.path.join(root, "wandb-metadata.json"))),
    }
out["listed"] = sorted(r.id for r in api.runs("ent/proj"))
out["finished"] = [r.id for r in api.runs("ent/proj", filters={"state": "finished"})]
print(json.dumps(out))
""",
    )
    ok, bad = seen["run-ok"], seen["run-bad"]
    assert (ok["state"], bad["state"]) == ("finished", "failed")
    assert ok["config"] == {"lr": 0.5, "epochs": 3}
    assert ok["summary"]["loss"] == pytest.approx(1 / 3) and ok["summary"]["best"] == 0.9
    assert ok["name"] == "display-run-ok" and ok["tags"] == ["launchctl"]
    assert ok["job_type"] == "launch"
    assert [row["loss"] for row in ok["history"]] == pytest.approx([1.0, 0.5, 1 / 3])
    assert [row["_step"] for row in ok["scan"]] == [0, 1, 2]
    assert [row["loss"] for row in bad["scan"]] == pytest.approx([1.0, 0.5])
    assert ok["metadata"]["startedAt"] == "2024-05-01T12:00:00.000000"
    assert seen["listed"] == ["run-bad", "run-ok"]
    assert seen["finished"] == ["run-ok"]
    assert not wandb_server.unknown, wandb_server.unknown


OFFLINE_SCRIPT = """
import json, wandb
run = wandb.init(mode="offline", project="proj", entity="ent", config={"lr": 0.01, "layers": 3})
for i in range(5):
    wandb.log({"loss": 1.0 / (i + 1)})
print("hello from the script")
run.summary["best"] = 0.9
run.finish()
print(json.dumps({"id": run.id, "dir": run.dir}))
"""


def test_wandb_sync_of_an_offline_run_lands_in_the_stand_in(
    wandb_server: WandbStandIn, tmp_path: Path
) -> None:
    made = _client(wandb_server, tmp_path, OFFLINE_SCRIPT)
    assert wandb_server.requests == []  # offline: nothing sent
    run_dir = Path(made["dir"]).parent  # .../wandb/offline-run-*/files -> the run folder
    assert run_dir.name.startswith("offline-run-")
    env = wandb_client_env(wandb_server, tmp_path / "wandb-client")
    wandb_cli = Path(sys.executable).parent / "wandb"
    proc = subprocess.run(
        [str(wandb_cli), "sync", str(run_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "UpsertBucket" in wandb_server.ops() and "file_stream" in wandb_server.ops()
    run = wandb_server.run("ent", "proj", made["id"])
    assert run is not None and run.state == "finished"
    assert any(line.endswith("hello from the script") for line in run.output_lines)
    seen = _client(
        wandb_server,
        tmp_path,
        f"""
import json, wandb
run = wandb.Api().run("ent/proj/{made["id"]}")
print(json.dumps({{"state": run.state, "config": dict(run.config), "best": run.summary["best"],
                  "loss": [r["loss"] for r in run.scan_history(keys=["loss"])]}}))
""",
    )
    assert seen["state"] == "finished"
    assert seen["config"] == {"lr": 0.01, "layers": 3}
    assert seen["best"] == 0.9
    assert seen["loss"] == pytest.approx([1.0, 0.5, 1 / 3, 0.25, 0.2])
    assert not wandb_server.unknown, wandb_server.unknown


def test_the_launch_api_pushes_pops_acks_and_fails_items(
    wandb_server: WandbStandIn, tmp_path: Path
) -> None:
    wandb_server.add_queue("ent", "proj", "lab")
    seen = _client(
        wandb_server,
        tmp_path,
        """
import json
from wandb.sdk.launch import launch_add
from wandb.sdk.launch.api import LaunchApi
queued = launch_add(docker_image="python:3.11", entity="ent", project="proj", queue_name="lab",
                    project_queue="proj", config={"overrides": {"run_config": {"lr": 0.5}}},
                    template_variables={"gpus": 1})
api = LaunchApi()
agent = api.create_launch_agent("ent", "proj", ["lab"], {"max_jobs": 1}, "0.1")
first = api.pop_from_run_queue("lab", "ent", "proj", agent["launchAgentId"])
acked = api.ack_run_queue_item(first["runQueueItemId"], "run-1")
api.update_launch_agent_status(agent["launchAgentId"], "RUNNING")
spec = json.dumps({"docker": {"docker_image": "busybox"}, "entity": "ent", "project": "proj"})
api.push_to_run_queue_by_name("ent", "proj", "lab", spec, None, priority=1)
second = api.pop_from_run_queue("lab", "ent", "proj", agent["launchAgentId"])
failed = api.fail_run_queue_item(second["runQueueItemId"], "image pull failed", "build")
empty = api.pop_from_run_queue("lab", "ent", "proj", agent["launchAgentId"])
print(json.dumps({"queued": queued.id, "agent": api.get_launch_agent(agent["launchAgentId"]),
                  "first": first, "acked": acked, "second": second["runQueueItemId"],
                  "failed": failed, "empty": empty}))
""",
    )
    queue = wandb_server.queue("ent", "proj", "lab")
    assert queue is not None and len(queue.items) == 2
    first, second = queue.items
    assert seen["queued"] == first.id == seen["first"]["runQueueItemId"]
    spec = json.loads(seen["first"]["runSpec"])
    assert spec["docker"]["docker_image"] == "python:3.11"
    assert spec["overrides"]["run_config"] == {"lr": 0.5}
    assert json.loads(first.template_variables or "{}") == {"gpus": 1}
    assert (first.state, first.associated_run_id, seen["acked"]) == ("CLAIMED", "run-1", True)
    assert (second.state, second.error_stage, second.error_message) == (
        "FAILED",
        "build",
        "image pull failed",
    )
    assert second.priority == 1 and seen["failed"] is True
    assert seen["empty"] is None
    assert seen["agent"]["agentStatus"] == "RUNNING"
    assert seen["agent"]["runQueues"] == [queue.id]
    assert wandb_server.agents[0].statuses == ["RUNNING"]
    assert not wandb_server.unknown, wandb_server.unknown


# ---------------------------------------------------------------- the stand-in's own rules


def test_a_wrong_key_or_none_is_refused_with_401(wandb_server: WandbStandIn) -> None:
    status, answer = _gql(
        wandb_server, "query Viewer { viewer { username } }", {}, "Viewer", key="x" * 40
    )
    assert status == 401 and answer["errors"]
    req = urllib.request.Request(wandb_server.url + "/graphql", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(req, timeout=5)
    assert caught.value.code == 401
    status, answer = _gql(wandb_server, "query Viewer { viewer { username } }", {}, "Viewer")
    assert (status, answer["data"]["viewer"]["username"]) == (200, "standin")
    assert [r.user for r in wandb_server.requests] == [None, None, "standin"]


def test_a_resent_chunk_changes_nothing_and_complete_sets_the_state(
    wandb_server: WandbStandIn,
) -> None:
    _gql(wandb_server, UPSERT, {"name": "r", "project": "p", "entity": "e"}, "UpsertBucket")
    chunk = {"files": {"wandb-history.jsonl": {"offset": 0, "content": ['{"_step": 0, "x": 1}']}}}
    for _ in range(2):
        assert _call(wandb_server, "/files/e/p/r/file_stream", chunk)[0] == 200
    more = {"files": {"wandb-history.jsonl": {"offset": 1, "content": ['{"_step": 1, "x": 2}']}}}
    assert _call(wandb_server, "/files/e/p/r/file_stream", more)[0] == 200
    run = wandb_server.run("e", "p", "r")
    assert run is not None and [row["x"] for row in run.history] == [1, 2]
    assert run.state == "running"
    _call(wandb_server, "/files/e/p/r/file_stream", {"complete": True, "exitcode": 137})
    assert (run.state, run.exitcode) == ("failed", 137)
    status, _ = _call(wandb_server, "/files/e/p/nobody/file_stream", chunk)
    assert status == 404


def test_an_upsert_updates_the_run_it_names_never_a_second_one(wandb_server: WandbStandIn) -> None:
    for state in ("running", "finished"):
        status, answer = _gql(
            wandb_server,
            UPSERT,
            {"name": "r", "project": "p", "entity": "e", "state": state},
            "UpsertBucket",
        )
        assert status == 200
    assert answer["data"]["upsertBucket"]["inserted"] is False
    assert len(wandb_server.runs) == 1
    run = wandb_server.run("e", "p", "r")
    assert run is not None and (run.state, run.upserts) == ("finished", 2)


def test_an_unknown_operation_field_is_an_error_and_is_recorded(wandb_server: WandbStandIn) -> None:
    status, answer = _gql(wandb_server, "mutation Nope { nope { ok } }", {}, "Nope")
    assert status == 200 and answer["data"] == {"nope": None}
    assert 'Cannot query field "nope"' in answer["errors"][0]["message"]
    assert ("Mutation", "nope") in wandb_server.unknown
    status, answer = _gql(wandb_server, "query { viewer {", {}, "Broken")
    assert status == 400 and "Syntax Error" in answer["errors"][0]["message"]


def test_members_only_may_write_to_a_restricted_entity() -> None:
    with WandbStandIn(members={"lab": {"alice"}}) as server:
        alice = server.add_user("alice")
        variables = {"name": "r", "project": "p", "entity": "lab"}
        _, answer = _gql(server, UPSERT, variables, "UpsertBucket")
        assert "permission denied" in answer["errors"][0]["message"]
        assert server.runs == []
        _, answer = _gql(server, UPSERT, variables, "UpsertBucket", key=alice)
        assert answer["data"]["upsertBucket"]["inserted"] is True


def _refused(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2) as sock:
            sock.sendall(b"POST /graphql HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}")
            return sock.recv(1) == b""  # accepted but dropped without an answer
    except OSError:
        return True


def test_faults_fail_next_stop_start_and_cut_after(wandb_server: WandbStandIn) -> None:
    viewer = ("query Viewer { viewer { username } }", {}, "Viewer")
    wandb_server.fail_next(2, status=503)
    assert [_gql(wandb_server, *viewer)[0] for _ in range(3)] == [503, 503, 200]
    _gql(wandb_server, UPSERT, {"name": "r", "project": "p", "entity": "e"}, "UpsertBucket")
    url = wandb_server.url
    wandb_server.stop()
    assert _refused(url)
    wandb_server.start()
    assert wandb_server.url == url and wandb_server.run("e", "p", "r") is not None
    wandb_server.cut_after(2)
    assert [_gql(wandb_server, *viewer)[0] for _ in range(2)] == [200, 200]
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        _gql(wandb_server, *viewer)
    wandb_server.start()
    assert _gql(wandb_server, *viewer)[0] == 200


def test_env_names_the_url_and_key(wandb_server: WandbStandIn) -> None:
    env = wandb_server.env(WANDB_MODE="online")
    assert env == {
        "WANDB_BASE_URL": wandb_server.url,
        "WANDB_API_KEY": wandb_server.api_key,
        "WANDB_MODE": "online",
    }
    assert wandb_server.url.startswith("http://127.0.0.1:")
    assert os.environ.get("WANDB_API_KEY") is None  # the fixture leaves the test's env alone
