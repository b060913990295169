"""How a Job and its Pod read as a run's end (issue 14), on objects built with the official
client's own model classes, in the shapes the API returns them: finished, failed with the
container's exit code, out of memory, the Job's deadline, a container that cannot start,
and W&B's preemption rule (DisruptionTarget with one of three reasons)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

client = pytest.importorskip("kubernetes.client")

from launchctl.runners.k8s_status import engine_state, job_exit, newest, running_on  # noqa: E402


def job(*conditions: tuple[str, str | None, str | None]) -> Any:
    found = [
        client.V1JobCondition(type=kind, status="True", reason=reason, message=message)
        for kind, reason, message in conditions
    ]
    return client.V1Job(
        metadata=client.V1ObjectMeta(name="launchctl-ab12cd34-x1y2z", namespace="team"),
        status=client.V1JobStatus(conditions=found or None),
    )


def state(**kwargs: Any) -> Any:
    return client.V1ContainerState(**kwargs)


def terminated(code: int, reason: str = "Error", message: str | None = None) -> Any:
    return state(
        terminated=client.V1ContainerStateTerminated(exit_code=code, reason=reason, message=message)
    )


def pod(
    phase: str,
    container: Any = None,
    conditions: list[Any] | None = None,
    created: int = 0,
    reason: str | None = None,
) -> Any:
    statuses = None
    if container is not None:
        statuses = [
            client.V1ContainerStatus(
                name="launch0",
                image="busybox",
                image_id="",
                ready=False,
                restart_count=0,
                state=container,
            )
        ]
    stamp = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(seconds=created)
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=f"p{created}", creation_timestamp=stamp),
        status=client.V1PodStatus(
            phase=phase, container_statuses=statuses, conditions=conditions, reason=reason
        ),
    )


def disruption(reason: str) -> Any:
    return client.V1PodCondition(
        type="DisruptionTarget", status="True", reason=reason, message=f"by {reason}"
    )


def test_a_complete_job_finished() -> None:
    found = job_exit(job(("Complete", None, None)), pod("Succeeded", terminated(0, "Completed")))
    assert found is not None and (found.code, found.preempted) == (0, False)


def test_a_failed_job_carries_its_containers_exit_code() -> None:
    failed = job(("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"))
    found = job_exit(failed, pod("Failed", terminated(3)))
    assert found is not None
    assert (found.code, found.message, found.preempted) == (3, "exit code 3", False)


def test_an_out_of_memory_kill_says_so() -> None:
    found = job_exit(
        job(("Failed", "BackoffLimitExceeded", None)), pod("Failed", terminated(137, "OOMKilled"))
    )
    assert found is not None and found.message == "out of memory (exit code 137)"


def test_a_job_past_its_deadline_says_so() -> None:
    found = job_exit(job(("Failed", "DeadlineExceeded", "Job was active longer")), None)
    assert found is not None and "activeDeadlineSeconds" in str(found.message)
    assert not found.preempted


@pytest.mark.parametrize(
    "reason", ["EvictionByEvictionAPI", "PreemptionByScheduler", "TerminationByKubelet"]
)
def test_w_and_bs_three_disruption_reasons_are_a_preemption(reason: str) -> None:
    taken = pod("Failed", terminated(143), conditions=[disruption(reason)])
    found = job_exit(job(("Failed", "BackoffLimitExceeded", None)), taken)
    assert found is not None and found.preempted and reason in str(found.message)
    # The pod may be gone by the time the Job fails (an eviction deletes it): the pod seen
    # last still tells.
    found = job_exit(job(("Failed", "PodFailurePolicy", None)), taken)
    assert found is not None and found.preempted


@pytest.mark.parametrize("reason", ["DeletionByTaintManager", "DeletionByPodGC"])
def test_other_disruptions_are_failures(reason: str) -> None:
    taken = pod("Failed", terminated(137), conditions=[disruption(reason)])
    found = job_exit(job(("Failed", "BackoffLimitExceeded", None)), taken)
    assert found is not None and not found.preempted and found.code == 137


def test_a_disruption_of_a_pod_still_running_waits_for_its_end() -> None:
    going = pod(
        "Running",
        state(running=client.V1ContainerStateRunning()),
        conditions=[disruption("PreemptionByScheduler")],
    )
    assert job_exit(job(), going) is None


@pytest.mark.parametrize(
    "reason", ["ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError"]
)
def test_a_container_that_cannot_start_fails_at_once(reason: str) -> None:
    waiting = state(waiting=client.V1ContainerStateWaiting(reason=reason, message="why"))
    found = job_exit(job(), pod("Pending", waiting))
    assert found is not None and found.code is None
    assert found.message == f"the container cannot start: {reason}: why"


def test_a_pod_being_pulled_or_scheduled_is_not_an_end() -> None:
    pulling = state(waiting=client.V1ContainerStateWaiting(reason="ErrImagePull"))
    assert job_exit(job(), pod("Pending", pulling)) is None
    assert job_exit(job(), None) is None
    assert job_exit(job(), pod("Running", state(running=client.V1ContainerStateRunning()))) is None


def test_the_engine_state_of_a_run_not_yet_running() -> None:
    unschedulable = client.V1PodCondition(
        type="PodScheduled",
        status="False",
        reason="Unschedulable",
        message="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
    )
    assert engine_state(job(), None) == "queued on the engine: the Job has no pod yet"
    assert engine_state(job(), pod("Pending", conditions=[unschedulable])) == (
        "queued on the engine: Unschedulable: 0/3 nodes are available: 3 Insufficient"
        " nvidia.com/gpu."
    )
    creating = state(waiting=client.V1ContainerStateWaiting(reason="ContainerCreating"))
    assert (
        engine_state(job(), pod("Pending", creating)) == "starting on the engine: ContainerCreating"
    )
    assert (
        engine_state(job(), pod("Running", state(running=client.V1ContainerStateRunning()))) is None
    )


def test_a_running_pod_is_named_with_its_node() -> None:
    running = pod("Running", state(running=client.V1ContainerStateRunning()), created=3)
    running.spec = client.V1PodSpec(containers=[client.V1Container(name="launch0")],
                                     node_name="gpu-node-7")  # fmt: skip
    assert running_on(running) == "running on the engine: pod p3 on node gpu-node-7"
    assert running_on(pod("Pending")) is None


def test_the_newest_pod_counts() -> None:
    assert newest([pod("Failed", created=1), pod("Running", created=5)]).status.phase == "Running"
    assert newest([]) is None


def test_the_api_shapes_read_the_same_through_the_clients_deserializer() -> None:
    """A Job and Pod as JSON from the API, read into the client's models as the runner gets
    them (ApiClient.deserialize), map as the hand-built ones do."""
    import json

    api = client.ApiClient()

    job_json = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "j"},
        "status": {
            "failed": 1,
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
        },
    }
    pod_json = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "status": {
            "phase": "Failed",
            "conditions": [
                {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}
            ],
            "containerStatuses": [
                {
                    "name": "launch0",
                    "image": "x",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": {"exitCode": 143}},
                }
            ],
        },
    }
    read_job = api.deserialize(json.dumps(job_json), "V1Job", "application/json")
    read_pod = api.deserialize(json.dumps(pod_json), "V1Pod", "application/json")
    found = job_exit(read_job, read_pod)
    assert found is not None and found.preempted and found.code == 143
