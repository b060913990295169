"""kubernetes: how a Job and its Pod read as a run's state, from the API's own objects.

Works on the client's model objects (``V1Job``, ``V1Pod``) as ``BatchV1Api`` and
``CoreV1Api`` return them; reads attributes only, imports nothing from ``kubernetes``.

- Job condition ``Complete`` -> finished (exit code 0).
- Job condition ``Failed`` -> failed, with the container's exit code and reason
  (``OOMKilled`` -> out of memory, ``DeadlineExceeded`` -> the Job's deadline passed).
- A Pod condition ``DisruptionTarget`` with reason ``EvictionByEvictionAPI``,
  ``PreemptionByScheduler`` or ``TerminationByKubelet`` -> preempted (W&B's rule,
  kubernetes_monitor.py ``_is_preempted``): the run goes back to its queue.
- A container that cannot start (its image cannot be pulled, a Secret it needs is missing)
  -> failed at once, saying why, rather than waiting forever.
- Before that: the engine's own state (``queued on the engine``, ``starting on the engine``).
"""

from __future__ import annotations

from typing import Any

from launchctl.runners.base import Exit

PREEMPTION_REASONS = ("EvictionByEvictionAPI", "PreemptionByScheduler", "TerminationByKubelet")
# A container waiting for one of these will not start by itself.
CANNOT_START = (
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
)


def _conditions(obj: Any) -> list[Any]:
    status = getattr(obj, "status", None)
    return list(getattr(status, "conditions", None) or [])


def _true(condition: Any) -> bool:
    return str(getattr(condition, "status", "")) == "True"


def preemption(pod: Any) -> str | None:
    """The pod's DisruptionTarget reason (and message) if it was taken away, else None."""
    for condition in _conditions(pod):
        if (
            condition.type == "DisruptionTarget"
            and _true(condition)
            and condition.reason in PREEMPTION_REASONS
        ):
            message = f": {condition.message}" if getattr(condition, "message", None) else ""
            return f"{condition.reason}{message}"
    return None


def _main_status(pod: Any) -> Any:
    statuses = list(getattr(pod.status, "container_statuses", None) or []) if pod else []
    return statuses[0] if statuses else None


def _terminated(pod: Any) -> Any:
    status = _main_status(pod)
    state = getattr(status, "state", None)
    return getattr(state, "terminated", None)


def _exit_of_container(pod: Any, fallback: str) -> Exit:
    ended = _terminated(pod)
    if ended is None:
        return Exit(code=None, message=fallback)
    code = ended.exit_code
    if ended.reason == "OOMKilled":
        return Exit(code=code, message=f"out of memory (exit code {code})")
    if code == 0:
        return Exit(code=0)
    detail = ended.message or (ended.reason if ended.reason not in ("Error", "Completed") else None)
    return Exit(code=code, message=f"exit code {code}" + (f" ({detail})" if detail else ""))


def job_exit(job: Any, pod: Any | None) -> Exit | None:
    """How the run ended, from its Job and its (latest known) Pod; None while it runs.

    ``pod`` may be one seen earlier: an evicted pod is deleted, its Job then fails.
    """
    preempted = preemption(pod) if pod is not None else None
    for condition in _conditions(job):
        if condition.type == "Complete" and _true(condition):
            return Exit(code=0)
        if condition.type == "Failed" and _true(condition):
            if preempted is not None:
                return _preempted(pod, preempted)
            if condition.reason == "DeadlineExceeded":
                return Exit(code=None, message="the Job ran past its activeDeadlineSeconds")
            why = " ".join(str(x) for x in (condition.reason, condition.message) if x)
            return _exit_of_container(pod, f"the Job failed: {why or 'no reason given'}")
    if pod is None:
        return None
    phase = getattr(pod.status, "phase", None)
    if phase in ("Succeeded", "Failed"):
        if preempted is not None:
            return _preempted(pod, preempted)
        reason = getattr(pod.status, "reason", None)
        said = f"the pod {phase.lower()}" + (f": {reason}" if reason else "")
        return _exit_of_container(pod, said)
    waiting = getattr(getattr(_main_status(pod), "state", None), "waiting", None)
    if waiting is not None and waiting.reason in CANNOT_START:
        detail = f": {waiting.message}" if waiting.message else ""
        return Exit(code=None, message=f"the container cannot start: {waiting.reason}{detail}")
    return None


def _preempted(pod: Any, why: str) -> Exit:
    ended = _terminated(pod)
    return Exit(code=getattr(ended, "exit_code", None), message=why, preempted=True)


def engine_state(job: Any | None, pod: Any | None) -> str | None:
    """What the engine says of a run not yet running, for ``runs show``; None once it runs."""
    if pod is None:
        return "queued on the engine: the Job has no pod yet" if job is not None else None
    phase = getattr(pod.status, "phase", None)
    if phase != "Pending":
        return None
    for condition in _conditions(pod):
        if condition.type == "PodScheduled" and not _true(condition):
            why = ": ".join(str(x) for x in (condition.reason, condition.message) if x)
            return "queued on the engine" + (f": {why}" if why else "")
    waiting = getattr(getattr(_main_status(pod), "state", None), "waiting", None)
    reason = getattr(waiting, "reason", None)
    return "starting on the engine" + (f": {reason}" if reason else "")


def running_on(pod: Any) -> str | None:
    """``running on the engine: pod NAME on node NODE`` once the Pod runs, else None."""
    if pod is None or getattr(pod.status, "phase", None) != "Running":
        return None
    node = getattr(pod.spec, "node_name", None) if getattr(pod, "spec", None) else None
    return f"running on the engine: pod {pod.metadata.name}" + (f" on node {node}" if node else "")


def newest(pods: list[Any]) -> Any | None:
    """The latest pod of a Job (a Job with backoffLimit 0 has one; a replaced one may linger)."""
    live = [p for p in pods if getattr(p.metadata, "deletion_timestamp", None) is None] or pods
    return max(live, key=lambda p: str(p.metadata.creation_timestamp or ""), default=None)
