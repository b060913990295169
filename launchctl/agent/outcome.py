"""How an attempt ends: finished, failed, stopped, or back in the queue.

A preempted run (taken away from outside, or drained with ``--requeue-running``) goes
back to the end of its queue with the same run id, at most ``MAX_RESUMES`` times. A
failed or timed-out run is retried when its queue's ``retry`` policy says so. Each is
one guarded move with an event, so ``runs show`` lists every attempt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from launchctl.runners import Exit
from launchctl.stall import STALLED
from launchctl.states import State, move
from launchctl.store import Row, Store

MAX_RESUMES = 5
TIMEOUT = "timeout"
REQUEUE = "requeued: the agent was drained for maintenance (--requeue-running)"


@dataclass
class Outcome:
    state: State
    summary: str


def record_exit(
    store: Store,
    run: Row,
    result: Exit,
    stop_reason: str | None,
    agent_id: str,
    *,
    expect: frozenset[State] = frozenset({State.RUNNING}),
    running: dict[str, Any] | None = None,
) -> Outcome:
    """Record how a held run's attempt ended; raises StateConflict if it is no longer ours.

    ``running``: the fields of its move to running, not recorded yet (a run started in the
    agent's loop that ended before its next commit): recorded first, and for a plain
    finish in the same update as its end (issue 17: one update less per trivial run).
    """
    fields: dict[str, Any] = {"exit_code": result.code}
    if running is not None:
        plain = (
            stop_reason is None
            and not result.preempted
            and not result.cancelled
            and result.code == 0
        )
        if plain:
            move(store, run["id"], State.FINISHED, agent_id=agent_id,
                 expect=frozenset({State.STARTING}), via=(State.RUNNING, running),
                 **fields)  # fmt: skip
            return Outcome(State.FINISHED, "exit code 0")
        move(store, run["id"], State.RUNNING, agent_id=agent_id,
             expect=frozenset({State.STARTING}), **running)  # fmt: skip
    if stop_reason == REQUEUE or (result.preempted and stop_reason is None):
        why = REQUEUE if stop_reason == REQUEUE else f"preempted: {result.message}"
        return _preempt(store, run, why, agent_id, fields, expect)
    if result.cancelled and stop_reason is None:  # issue 14: cancelled on the engine
        stop_reason = result.message or "cancelled on the engine"
    if stop_reason == TIMEOUT:
        return _fail(store, run, TIMEOUT, "timeout", agent_id, fields, expect)
    if stop_reason == STALLED:  # issue 18: on_stall: stop (launchctl.agent.stall)
        return _fail(store, run, STALLED, STALLED, agent_id, fields, expect)
    if stop_reason is not None:
        move(store, run["id"], State.STOPPED, agent_id=agent_id, reason=stop_reason,
             expect=expect, **fields)  # fmt: skip
        return Outcome(State.STOPPED, stop_reason)
    if result.code == 0:
        move(store, run["id"], State.FINISHED, agent_id=agent_id, expect=expect, **fields)
        return Outcome(State.FINISHED, "exit code 0")
    reason = result.message or f"exit code {result.code}"
    return _fail(store, run, reason, "failed", agent_id, fields, expect)


def _preempt(
    store: Store,
    run: Row,
    why: str,
    agent_id: str,
    fields: dict[str, Any],
    expect: frozenset[State],
) -> Outcome:
    move(store, run["id"], State.PREEMPTED, agent_id=agent_id, reason=why, expect=expect,
         **fields)  # fmt: skip
    current = store.runs.get(run["id"])
    times = current["resume_count"] + 1
    if current["cancel_requested"]:
        move(store, run["id"], State.STOPPED, agent_id=agent_id, reason="cancelled",
             expect=frozenset({State.PREEMPTED}))  # fmt: skip
        return Outcome(State.STOPPED, "cancelled while preempted")
    if times > MAX_RESUMES:
        reason = f"preempted too often ({times} times; at most {MAX_RESUMES} requeues)"
        move(store, run["id"], State.FAILED, agent_id=agent_id, stage="run", reason=reason,
             expect=frozenset({State.PREEMPTED}))  # fmt: skip
        return Outcome(State.FAILED, reason)
    message = f"requeued after preemption ({times} of {MAX_RESUMES}); resumes as the same run"
    move(store, run["id"], State.QUEUED, agent_id=agent_id, message=message,
         resume_count=times, expect=frozenset({State.PREEMPTED}))  # fmt: skip
    return Outcome(State.QUEUED, message)


def retry_policy(store: Store, run: Row) -> dict[str, Any] | None:
    """The run's queue's ``retry`` policy, if it has one."""
    if run["queue_id"] is None:
        return None
    queue = store.queues.by_id(run["queue_id"])
    if queue is None or not queue["config"].get("retry"):
        return None
    from launchctl.queues import check_retry

    return check_retry(queue["config"]["retry"])


def _fail(
    store: Store,
    run: Row,
    reason: str,
    kind: str,
    agent_id: str,
    fields: dict[str, Any],
    expect: frozenset[State],
) -> Outcome:
    policy = retry_policy(store, run)
    current = store.runs.get(run["id"])
    if (
        policy is not None
        and kind in policy["on"]
        and current["retries"] < policy["max"]
        and not current["cancel_requested"]
        and State.RUNNING in expect
    ):
        attempt = current["retries"] + 1
        wait = policy["backoff_s"]
        message = f"attempt failed ({reason}); retry {attempt} of {policy['max']}" + (
            f" in {wait:g}s" if wait else ""
        )
        move(store, run["id"], State.QUEUED, agent_id=agent_id, message=message,
             retries=attempt, not_before=time.time() + wait if wait else None,
             expect=frozenset({State.RUNNING}), **fields)  # fmt: skip
        return Outcome(State.QUEUED, message)
    move(store, run["id"], State.FAILED, agent_id=agent_id, stage="run", reason=reason,
         expect=expect, **fields)  # fmt: skip
    return Outcome(State.FAILED, reason)
