"""The agent: claim runs from queues, start them, watch them, record how they end.

One pass of the loop is ``run_once``: collect started runs, reap finished ones,
pass on cancels, renew leases, claim and start new runs. ``run`` repeats it,
sleeping on a file watch of the store so new work starts within a fraction of a
second. Starting (which may build an image) happens in worker threads.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from launchctl import runners
from launchctl.agent.starter import Cancelled, StartContext, Starter
from launchctl.agent.wake import Waker
from launchctl.errors import LaunchctlError, StateConflict
from launchctl.runners import Exit, Handle, RunnerError
from launchctl.states import ACTIVE, State, move
from launchctl.store import Row, Store

DEFAULT_LEASE_S = 60.0
DEFAULT_GRACE_S = 10.0
TIMEOUT = "timeout"


@dataclass
class Active:
    """A run this agent has started and follows."""

    run_id: str
    handle: Handle
    stop_reason: str | None = None  # set when the agent asked it to stop
    deadline: float | None = None  # time.monotonic() past which it is stopped: timeout


@dataclass
class AgentOptions:
    max_jobs: int = 1  # -1: unlimited
    lease_s: float = DEFAULT_LEASE_S
    grace_s: float = DEFAULT_GRACE_S
    fallback_poll_s: float = 2.0
    env: dict[str, str] = field(default_factory=dict)
    builder: dict[str, Any] = field(default_factory=dict)
    registry: Any = None
    progress: bool = False


class Agent:
    def __init__(
        self,
        store: Store,
        queues: list[str],
        options: AgentOptions | None = None,
        *,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.queue_names = list(dict.fromkeys(queues))
        self.options = options or AgentOptions()
        self.say = say or (lambda line: print(line, flush=True))
        self.id = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"
        self.queues: list[Row] = []
        self.active: dict[str, Active] = {}
        self.starting: dict[str, Future[Active | None]] = {}
        self.draining = False
        self.stop_reason: str | None = None  # set by stop_all: runs that start now stop too
        self._rr = 0
        self._renewed_at = 0.0
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self.waker = Waker(store.db.path, fallback_s=self.options.fallback_poll_s)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Check the queues and register. Raises for a missing queue: never wait silently."""
        self.queues = [self.store.queues.get(name) for name in self.queue_names]
        for queue in self.queues:
            runners.get(queue["resource"])  # refuse a queue this agent cannot run
        self.store.agents.register(
            self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=self.queue_names,
            max_jobs=self.options.max_jobs,
        )
        self._renewed_at = time.monotonic()

    @property
    def capacity(self) -> int:
        if self.options.max_jobs < 0:
            return sys.maxsize
        return max(0, self.options.max_jobs - len(self.active) - len(self.starting))

    @property
    def busy(self) -> bool:
        return bool(self.active or self.starting)

    def drain(self) -> None:
        """First signal: stop claiming; running runs finish."""
        self.draining = True
        self.waker.wake()

    def stop_all(self, reason: str = "agent shut down") -> None:
        """Second signal: stop every running run; they end as ``stopped``."""
        self.draining = True
        self.stop_reason = reason
        for active in self.active.values():
            if active.stop_reason is None:
                active.stop_reason = reason
            active.handle.stop(self.options.grace_s)
        self.waker.wake()

    def run(self, *, burst: bool = False) -> None:
        """Loop until drained (or, with ``burst``, until nothing is left to claim)."""
        self.waker.start()
        try:
            while True:
                self.run_once()
                if not self.busy and (self.draining or (burst and not self._claimable())):
                    break
                self.waker.wait(self.next_wake())
        finally:
            self.waker.close()
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            self.store.agents.stopped(self.id)

    def run_once(self) -> int:
        """One pass: collect, reap, cancel, renew, claim. Returns how many runs were claimed."""
        self.collect_started()
        self.reap()
        self.enforce_deadlines()
        self.apply_cancels()
        self.renew()
        if self.draining:
            return 0
        return self.claim_and_start()

    # -- steps ----------------------------------------------------------------------------
    def collect_started(self) -> None:
        for run_id, future in list(self.starting.items()):
            if not future.done():
                continue
            del self.starting[run_id]
            active = future.result()
            if active is None:
                continue
            self.active[run_id] = active
            if self.stop_reason is not None:
                active.stop_reason = self.stop_reason
                active.handle.stop(self.options.grace_s)

    def enforce_deadlines(self) -> None:
        """A run past its max_run_time is stopped; it ends failed with the reason timeout."""
        now = time.monotonic()
        for active in self.active.values():
            if active.deadline is not None and now >= active.deadline and not active.stop_reason:
                active.stop_reason = TIMEOUT
                active.handle.stop(self.options.grace_s)
                self.say(f"stopping run {active.run_id}: past its max_run_time")

    def next_wake(self) -> float:
        """Seconds to sleep: the fallback poll, or less when a deadline comes sooner."""
        wait = self.options.fallback_poll_s
        now = time.monotonic()
        for active in self.active.values():
            if active.deadline is not None and not active.stop_reason:
                wait = min(wait, max(0.0, active.deadline - now) + 0.01)
        return wait

    def reap(self) -> None:
        for run_id, active in list(self.active.items()):
            result = active.handle.poll()
            if result is None:
                continue
            del self.active[run_id]
            self._finish(run_id, result, active.stop_reason)

    def apply_cancels(self) -> None:
        if not self.active:
            return
        for run in self.store.runs.held_by(self.id):
            active = self.active.get(run["id"])
            if run["cancel_requested"] and active is not None and active.stop_reason is None:
                active.stop_reason = "cancelled"
                active.handle.stop(self.options.grace_s)
                self.say(f"stopping run {run['id']}: cancelled")

    def renew(self) -> None:
        now = time.monotonic()
        if now - self._renewed_at < self.options.lease_s / 3:
            return
        self._renewed_at = now
        if self.busy:
            self.store.runs.renew_leases(self.id, self.options.lease_s)
        self.store.agents.heartbeat(self.id)

    def claim_and_start(self) -> int:
        claimed_count = 0
        n = len(self.queues)
        while self.capacity > 0 and n and self._claimable():
            claimed = None
            for i in range(n):
                queue = self.queues[(self._rr + i) % n]
                claimed = self.store.runs.claim_next(queue["id"], self.id, self.options.lease_s)
                if claimed is not None:
                    self._rr = (self._rr + i + 1) % n
                    break
            if claimed is None:
                break
            self.start_claimed(claimed)
            claimed_count += 1
        return claimed_count

    def _claimable(self) -> bool:
        return self.store.runs.has_queued(q["id"] for q in self.queues)

    # -- one run --------------------------------------------------------------------------
    def start_claimed(self, run: Row) -> None:
        """Start a run this agent holds, in a worker thread; the loop collects its handle."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(thread_name_prefix="launchctl-start")
        future = self._pool.submit(self._start, run)
        future.add_done_callback(lambda _f: self.waker.wake())
        self.starting[run["id"]] = future

    def _thread_store(self) -> Store:
        """Each worker thread talks to the database through its own connection."""
        store: Store | None = getattr(self._local, "store", None)
        if store is None:
            store = Store(self.store.root)
            self._local.store = store
        return store

    def _start(self, run: Row) -> Active | None:
        run_id = run["id"]
        store = self._thread_store()
        context = StartContext(
            agent_id=self.id,
            env=self.options.env,
            builder=self.options.builder,
            registry=self.options.registry,
            on_exit=self.waker.wake,
            progress=self.options.progress,
        )
        try:
            if run["cancel_requested"]:
                raise Cancelled(run_id)
            started = Starter(store, context).start(run)
        except Cancelled:
            with _quiet_conflict():
                move(store, run_id, State.STOPPED, agent_id=self.id, reason="cancelled",
                     expect=frozenset({State.CLAIMED, State.BUILDING}))  # fmt: skip
            self.say(f"run {run_id} stopped before it started (cancelled)")
            return None
        except RunnerError as exc:
            self._fail(store, run_id, exc.stage, str(exc))
            return None
        except LaunchctlError as exc:
            self._fail(store, run_id, "agent", str(exc))
            return None
        except Exception as exc:  # one failing run never stops the agent
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            self._fail(store, run_id, "agent", f"internal error: {detail}")
            return None
        queue = run["queue_name"] or "(direct)"
        self.say(f"started run {run_id} ({run['name']}) from queue {queue}")
        deadline = None
        if started.max_run_time is not None:
            deadline = time.monotonic() + started.max_run_time
        return Active(run_id, started.handle, deadline=deadline)

    def _finish(self, run_id: str, result: Exit, stop_reason: str | None) -> None:
        fields: dict[str, Any] = {"exit_code": result.code}
        if stop_reason == TIMEOUT:
            to, fields["stage"], fields["reason"] = State.FAILED, "run", TIMEOUT
        elif stop_reason is not None:
            to, fields["reason"] = State.STOPPED, stop_reason
        elif result.code == 0:
            to = State.FINISHED
        else:
            to = State.FAILED
            fields["stage"] = "run"
            fields["reason"] = result.message or f"exit code {result.code}"
        try:
            move(self.store, run_id, to, agent_id=self.id,
                 expect=frozenset({State.RUNNING}), **fields)  # fmt: skip
        except StateConflict as exc:
            self.say(f"run {run_id}: {exc}")
            return
        how = fields.get("reason") or f"exit code {result.code}"
        self.say(f"run {run_id} {to.value} ({how})")

    def _fail(self, store: Store, run_id: str, stage: str, reason: str) -> None:
        with _quiet_conflict():
            move(store, run_id, State.FAILED, agent_id=self.id, stage=stage, reason=reason,
                 expect=frozenset(ACTIVE))  # fmt: skip
        first = reason.splitlines()[0] if reason else ""
        self.say(f"run {run_id} failed at stage {stage}: {first}")


def _quiet_conflict() -> Any:
    import contextlib

    return contextlib.suppress(StateConflict)
