"""The kubernetes runner end to end (issue 14), through the real CLI and agent, against the
STAND-IN API server of tests/k8s/standin.py (not Kubernetes: its "kubelet" runs the
container's command on this machine; see its docstring). What a real cluster adds is in
tests/k8s/test_cluster.py, marked ``cluster``."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from launchctl.store import Store
from tests.conftest import EXAMPLES, StartAgent, cli, cli_json, table_counts, wait_for
from tests.k8s.standin import StandIn

IMAGE = "busybox:1.36"
# W&B's docs Job config (setup-launch-kubernetes) with launchctl's env and a secret.
QUEUE = {
    "spec": {
        "template": {
            "spec": {
                "containers": [
                    {
                        "env": [{"name": "MY_ENV_VAR", "value": "some-value"}],
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                    }
                ]
            }
        }
    },
    "metadata": {"labels": {"queue": "k8s-test"}},
    "env": {"TOKEN": {"secret": "api-token"}, "MODE": "test"},
}


def k8s_queue(config: dict[str, Any] | None = None, name: str = "k8s") -> None:
    cli(
        "queue",
        "create",
        name,
        "-r",
        "kubernetes",
        "-c",
        json.dumps(QUEUE if config is None else config),
        check=True,
    )


def launch(command: str, queue: str = "k8s", *extra: str) -> str:
    proc = cli("launch", "-q", queue, "-d", IMAGE, "-E", command, *extra, check=True)
    return proc.stdout.strip()


def test_an_image_job_runs_as_a_job_with_its_secret_by_reference(standin: StandIn) -> None:
    cli("secret", "set", "api-token", input="tok-XYZ-123", check=True)
    k8s_queue()
    run_id = launch(
        "sh -c 'echo run=$WANDB_RUN_ID queue=$WANDB_LAUNCH_QUEUE_NAME $MY_ENV_VAR $MODE"
        " token=$TOKEN'"
    )
    cli("agent", "-q", "k8s", "--burst", check=True)
    shown = cli_json("runs", "show", run_id)
    assert (shown["state"], shown["exit_code"]) == ("finished", 0), shown
    assert cli("logs", run_id, check=True).stdout == (
        f"run={run_id} queue=k8s some-value test token=***\n"
    )
    [job] = standin.created
    assert "tok-XYZ-123" not in json.dumps(job)  # the value went into a Secret, not the Job
    assert job["metadata"]["namespace"] == "team"  # the kubeconfig context's namespace
    assert job["metadata"]["labels"] == {
        "queue": "k8s-test",
        "launchctl.run_id": run_id,
        "launchctl.queue": "k8s",
    }
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": f"launchctl-run-{run_id}",
        "key": "TOKEN",
    }
    # Its end recorded, the Job and the run's Secret are deleted.
    wait_for(lambda: not standin.jobs and not standin.secrets, what="Job and Secret deleted")


def test_the_log_is_read_from_the_runs_own_container_beside_a_sidecar(standin: StandIn) -> None:
    sidecar = {"name": "proxy", "image": IMAGE, "command": ["sh", "-c", "echo proxy"]}
    k8s_queue({"spec": {"template": {"spec": {"containers": [{"name": "main"}, sidecar]}}}})
    run_id = launch("sh -c 'echo from main'")
    cli("agent", "-q", "k8s", "--burst", check=True)
    assert cli("logs", run_id, check=True).stdout == "from main\n"
    assert standin.log_reads and {q.get("container") for q in standin.log_reads} == {"main"}


def test_a_failing_job_fails_the_run_with_its_exit_code(standin: StandIn) -> None:
    k8s_queue({"metadata": {"namespace": "ml"}})
    run_id = launch("sh -c 'echo going down; exit 3'")
    cli("agent", "-q", "k8s", "--burst", check=True)
    shown = cli_json("runs", "show", run_id)
    assert (shown["state"], shown["exit_code"], shown["reason"]) == ("failed", 3, "exit code 3")
    assert cli("logs", run_id, check=True).stdout == "going down\n"
    assert standin.created[0]["metadata"]["namespace"] == "ml"


def test_cancel_deletes_the_job_with_foreground_propagation(
    standin: StandIn, store: Store, start_agent: StartAgent
) -> None:
    k8s_queue()
    cli("secret", "set", "api-token", input="t", check=True)
    run_id = launch("sh -c 'echo up; sleep 300'")
    start_agent("-q", "k8s", "--grace", "1")
    wait_for(lambda: "up" in cli("logs", run_id).stdout, what="first log line")
    # The run's Secret is the Job's dependent: the cluster removes it with the Job.
    secret = standin.secrets[("team", f"launchctl-run-{run_id}")]
    [owner] = secret["metadata"]["ownerReferences"]
    [job] = standin.jobs.values()
    assert (owner["kind"], owner["uid"]) == ("Job", job["metadata"]["uid"])
    cli("runs", "cancel", run_id, check=True)
    wait_for(lambda: store.runs.state(run_id) == "stopped", what="stopped state")
    assert store.runs.get(run_id)["reason"] == "cancelled"
    assert standin.deletes[0]["propagationPolicy"] == "Foreground"
    wait_for(lambda: not standin.jobs, what="Job gone")


def test_a_preempted_pod_requeues_the_run_which_resumes_with_the_same_id(
    standin: StandIn, store: Store, start_agent: StartAgent, tmp_path: Path
) -> None:
    k8s_queue({})
    # The first attempt waits to be preempted; the resumed one (WANDB_RESUME=allow) ends.
    run_id = launch(
        "sh -c 'echo attempt id=$WANDB_RUN_ID resume=${WANDB_RESUME:-none};"
        ' [ -n "$WANDB_RESUME" ] && exit 0; sleep 300\''
    )
    start_agent("-q", "k8s")
    wait_for(lambda: "resume=none" in cli("logs", run_id).stdout, what="first attempt")
    standin.preempt(run_id, "PreemptionByScheduler")
    wait_for(lambda: store.runs.state(run_id) == "finished", what="resumed run finished")
    run = store.runs.get(run_id)
    assert run["resume_count"] == 1
    log = cli("logs", run_id, check=True).stdout
    assert f"attempt id={run_id} resume=none\n" in log
    assert f"attempt id={run_id} resume=allow\n" in log
    shown = cli("runs", "show", run_id, check=True).stdout
    assert "preempted: PreemptionByScheduler" in shown
    assert len(standin.created) == 2


def test_a_restarted_agent_adopts_the_job_by_its_note_and_copies_each_line_once(
    standin: StandIn, store: Store, start_agent: StartAgent, tmp_path: Path
) -> None:
    k8s_queue({})
    go = tmp_path / "go"
    run_id = launch(f"sh -c 'echo one; while [ ! -f {go} ]; do sleep 0.05; done; echo two'")
    first = start_agent("-q", "k8s")
    wait_for(lambda: "one" in cli("logs", run_id).stdout, what="first line")
    first.signal(signal.SIGKILL)
    first.wait()
    go.touch()  # it ends while no agent watches
    wait_for(lambda: standin.jobs and all(
        j["status"].get("conditions") for j in standin.jobs.values()
    ), what="Job complete")  # fmt: skip
    start_agent("-q", "k8s")
    wait_for(lambda: store.runs.state(run_id) == "finished", what="adopted run finished")
    assert cli("logs", run_id, check=True).stdout == "one\ntwo\n"
    assert len(standin.created) == 1  # followed again, never started twice
    wait_for(lambda: not standin.jobs, what="Job deleted once recorded")


def test_without_its_note_a_restarted_agent_finds_the_job_by_its_label(
    standin: StandIn, store: Store, start_agent: StartAgent, tmp_path: Path
) -> None:
    k8s_queue({})
    go = tmp_path / "go"
    run_id = launch(f"sh -c 'echo one; while [ ! -f {go} ]; do sleep 0.05; done; echo two'")
    first = start_agent("-q", "k8s")
    wait_for(lambda: "one" in cli("logs", run_id).stdout, what="first line")
    first.signal(signal.SIGKILL)
    first.wait()
    note = Path(store.runs.get(run_id)["log_path"]).with_name("k8s_job")
    note.unlink()  # say, written by nothing: the Job is found by launchctl.run_id
    go.touch()
    start_agent("-q", "k8s")
    wait_for(lambda: store.runs.state(run_id) == "finished", what="adopted run finished")
    # Without the note nothing says how much of the pod's log the run's log holds: it is
    # copied again from its start (a line twice rather than a line lost).
    assert cli("logs", run_id, check=True).stdout == "one\none\ntwo\n"
    assert len(standin.created) == 1
    assert ("GET", "/apis/batch/v1/jobs") in standin.requests  # listed by label, everywhere


def test_a_run_the_cluster_cannot_schedule_says_so_then_runs(
    standin: StandIn, store: Store, start_agent: StartAgent
) -> None:
    standin.held.set()
    k8s_queue({})
    run_id = launch("sh -c 'echo finally'")
    start_agent("-q", "k8s")
    wait_for(
        lambda: "queued on the engine: Unschedulable" in cli("runs", "show", run_id).stdout,
        what="engine state shown",
    )
    standin.held.clear()
    wait_for(lambda: store.runs.state(run_id) == "finished", what="finished")
    assert cli("logs", run_id, check=True).stdout == "finally\n"
    shown = cli("runs", "show", run_id, check=True).stdout
    assert shown.count("queued on the engine: Unschedulable: 0/1 nodes are available") == 1


def test_an_image_that_cannot_be_pulled_fails_the_run(standin: StandIn) -> None:
    standin.fail_image = "nothing-here"
    k8s_queue({})
    run_id = cli(
        "launch", "-q", "k8s", "-d", "registry.example/nothing-here:1", "-E", "true", check=True
    ).stdout.strip()
    cli("agent", "-q", "k8s", "--burst", check=True)
    shown = cli_json("runs", "show", run_id)
    assert shown["state"] == "failed"
    assert "the container cannot start: ImagePullBackOff" in shown["reason"]
    wait_for(lambda: not standin.jobs, what="Job deleted")


def test_no_cluster_configured_fails_the_run_saying_how_to_configure_one(
    monkeypatch: Any, tmp_path: Path
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    k8s_queue({})
    run_id = launch("true")
    cli("agent", "-q", "k8s", "--burst", check=True)
    shown = cli_json("runs", "show", run_id)
    assert shown["state"] == "failed" and "no Kubernetes cluster configured" in shown["reason"]


# -- hardening from the CLI --------------------------------------------------------------
def test_queue_create_refuses_host_access_in_one_line_and_writes_nothing(home: Path) -> None:
    cli("queue", "list", check=True)
    before = table_counts(home)
    hostile = {"spec": {"template": {"spec": {"hostNetwork": True}}}}
    proc = cli("queue", "create", "k8s", "-r", "kubernetes", "-c", json.dumps(hostile))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "allow: [hostNetwork]" in proc.stderr
    assert table_counts(home) == before
    # The admin allows it explicitly: accepted.
    allowed = {**hostile, "allow": ["hostNetwork"]}
    cli("queue", "create", "k8s", "-r", "kubernetes", "-c", json.dumps(allowed), check=True)
    # An edit that adds another kind of host access is refused the same way.
    worse = {**allowed, "spec": {"template": {"spec": {"hostNetwork": True, "hostPID": True}}}}
    proc = cli("queue", "edit", "k8s", "--config", json.dumps(worse))
    assert proc.returncode == 1 and "allow: [hostPID]" in proc.stderr


def test_host_access_given_at_launch_fails_the_run_at_the_agent(standin: StandIn) -> None:
    """-R is an admin's (members may not give it), and even an admin's run asks nothing the
    queue does not allow: checked again when the Job is made."""
    k8s_queue({})
    privileged = {"kubernetes": {"spec": {"template": {"spec": {"containers": [
        {"securityContext": {"privileged": True}}]}}}}}  # fmt: skip
    run_id = launch("true", "k8s", "-R", json.dumps(privileged))
    grant = {"kubernetes": {"allow": ["privileged"]}}
    other = launch("true", "k8s", "-R", json.dumps(grant))
    cli("agent", "-q", "k8s", "--burst", check=True)
    shown = cli_json("runs", "show", run_id)
    assert (shown["state"], shown["stage"]) == ("failed", "agent")
    assert "securityContext.privileged" in shown["reason"] and "allow" in shown["reason"]
    shown = cli_json("runs", "show", other)
    assert "only its queue's config grants" in shown["reason"]
    assert standin.created == []


def test_a_template_variable_sets_the_jobs_gpus_within_its_bounds(standin: StandIn) -> None:
    """GPUs on Kubernetes are the cluster's (nvidia.com/gpu), not the local GPU table: a
    queue exposes them as a template variable with bounds, as W&B's queue templates do."""
    config = {
        "template_variables": {"gpus": {"type": "integer", "minimum": 0, "maximum": 4}},
        "resource_args": {"kubernetes": {"spec": {"template": {"spec": {"containers": [
            {"resources": {"limits": {"nvidia.com/gpu": "{{gpus}}"}}}]}}}}},
    }  # fmt: skip
    k8s_queue(config)
    proc = cli("launch", "-q", "k8s", "-d", IMAGE, "-E", "true", "-v", "gpus=9")
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    run_id = launch("sh -c 'echo trained'", "k8s", "-v", "gpus=2")
    cli("agent", "-q", "k8s", "--burst", check=True)
    assert cli_json("runs", "show", run_id)["state"] == "finished"
    [job] = standin.created
    limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": "2"}


def test_max_run_time_stops_the_job_and_fails_the_run_as_a_timeout(
    standin: StandIn, store: Store
) -> None:
    k8s_queue({"max_run_time": 1})
    run_id = launch("sh -c 'echo started; sleep 300'")
    cli("agent", "-q", "k8s", "--burst", "--grace", "1", check=True)
    run = store.runs.get(run_id)
    assert (run["state"], run["reason"]) == ("failed", "timeout")
    assert standin.deletes and standin.deletes[0]["propagationPolicy"] == "Foreground"


def test_the_run_rides_out_an_api_server_that_stops_answering_for_a_while(
    standin: StandIn, store: Store, start_agent: StartAgent, tmp_path: Path
) -> None:
    k8s_queue({})
    go = tmp_path / "go"
    run_id = launch(f"sh -c 'echo one; while [ ! -f {go} ]; do sleep 0.05; done; echo two'")
    start_agent("-q", "k8s")
    wait_for(lambda: "one" in cli("logs", run_id).stdout, what="first line")
    standin.down.set()
    seen = len(standin.requests)
    wait_for(lambda: len(standin.requests) > seen + 5, what="requests refused while down")
    go.touch()  # it ends while the API server does not answer
    assert store.runs.state(run_id) == "running"
    standin.down.clear()
    wait_for(lambda: store.runs.state(run_id) == "finished", what="finished once it answers")
    assert cli("logs", run_id, check=True).stdout == "one\ntwo\n"


def test_the_example_queue_runs_a_job(standin: StandIn) -> None:
    cli("secret", "set", "wandb-key", input="k-1", check=True)
    cli("queue", "create", "k8s", "-r", "kubernetes", "-c", str(EXAMPLES / "queues/k8s.yaml"),
        check=True)  # fmt: skip
    run_id = launch("sh -c 'echo mode=$MODE'", "k8s", "-v", "gpus=1")
    cli("agent", "-q", "k8s", "--burst", check=True)
    assert cli("logs", run_id, check=True).stdout == "mode=train\n"
    [job] = standin.created
    resources = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["limits"] == {"nvidia.com/gpu": "1"}


def test_registry_credentials_become_a_pull_secret_for_that_registry_only(
    standin: StandIn,
) -> None:
    cli("secret", "set", "reg-pass", input="p4ss-word", check=True)
    registry = {"url": "registry.lab:5000", "username": "bot", "password": {"secret": "reg-pass"}}
    k8s_queue({"registry": registry, "resource_args": {"kubernetes": {}}})
    ours = cli(
        "launch", "-q", "k8s", "-d", "registry.lab:5000/team/train:1", "-E", "true", check=True
    ).stdout.strip()
    cli("agent", "-q", "k8s", "--burst", check=True)
    assert cli_json("runs", "show", ours)["state"] == "finished"
    [job] = standin.created
    pull = f"launchctl-run-{ours}-pull"
    assert job["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": pull}]
    assert "p4ss-word" not in json.dumps(job)
    # An image from another registry gets no pull Secret: the credentials go nowhere else.
    other = launch("true")
    cli("agent", "-q", "k8s", "--burst", check=True)
    assert cli_json("runs", "show", other)["state"] == "finished"
    assert "imagePullSecrets" not in standin.created[1]["spec"]["template"]["spec"]
    [secret] = standin.created_secrets
    assert (secret["metadata"]["name"], secret["type"]) == (pull, "kubernetes.io/dockerconfigjson")
    auths = json.loads(secret["stringData"][".dockerconfigjson"])["auths"]
    assert list(auths) == ["registry.lab:5000"]
    assert (auths["registry.lab:5000"]["username"], auths["registry.lab:5000"]["password"]) == (
        "bot",
        "p4ss-word",
    )


def test_an_image_built_and_pushed_nowhere_fails_saying_to_name_a_registry(
    standin: StandIn,
) -> None:
    """Seen from the cluster: a pod whose image (named as the builder names them, no
    registry) cannot be pulled."""
    standin.fail_image = "launchctl/"
    k8s_queue({})
    run_id = cli(
        "launch", "-q", "k8s", "-d", "launchctl/trainer:0123abcd", "-E", "true", check=True
    ).stdout.strip()
    cli("agent", "-q", "k8s", "--burst", check=True)
    reason = cli_json("runs", "show", run_id)["reason"]
    assert "ImagePullBackOff" in reason and "give the queue a registry" in reason
