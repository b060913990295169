"""The agent: claim runs from queues, start them, watch them, record how they end.

One pass of the loop is ``run_once``: reap finished runs, pass on cancels, renew
leases, claim and start new runs. ``run`` repeats it, sleeping on a file watch of
the store so new work starts within a fraction of a second.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from launchctl import runners
from launchctl.agent import workspace
from launchctl.agent.wake import Waker
from launchctl.errors import LaunchctlError, StateConflict
from launchctl.runenv import env_from_option, run_environment
from launchctl.runners import Exit, Handle, Launch, RunnerError
from launchctl.states import ACTIVE, State, move
from launchctl.store import Row, Store

DEFAULT_LEASE_S = 60.0
DEFAULT_GRACE_S = 10.0


@dataclass
class Active:
    """A run this agent has started and follows."""

    run_id: str
    handle: Handle
    stop_reason: str | None = None  # set when the agent asked it to stop


@dataclass
class AgentOptions:
    max_jobs: int = 1  # -1: unlimited
    lease_s: float = DEFAULT_LEASE_S
    grace_s: float = DEFAULT_GRACE_S
    fallback_poll_s: float = 2.0
    env: dict[str, str] = field(default_factory=dict)


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
        self.draining = False
        self._rr = 0
        self._renewed_at = 0.0
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
        return max(0, self.options.max_jobs - len(self.active))

    def drain(self) -> None:
        """First signal: stop claiming; running runs finish."""
        self.draining = True
        self.waker.wake()

    def stop_all(self, reason: str = "agent shut down") -> None:
        """Second signal: stop every running run; they end as ``stopped``."""
        self.draining = True
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
                if not self.active and (self.draining or (burst and not self._claimable())):
                    break
                self.waker.wait()
        finally:
            self.waker.close()
            self.store.agents.stopped(self.id)

    def run_once(self) -> int:
        """One pass: reap, cancel, renew, claim. Returns how many runs were started."""
        self.reap()
        self.apply_cancels()
        self.renew()
        if self.draining:
            return 0
        return self.claim_and_start()

    # -- steps ----------------------------------------------------------------------------
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
        if self.active:
            self.store.runs.renew_leases(self.id, self.options.lease_s)
        self.store.agents.heartbeat(self.id)

    def claim_and_start(self) -> int:
        started = 0
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
            started += 1
        return started

    def _claimable(self) -> bool:
        return self.store.runs.has_queued(q["id"] for q in self.queues)

    # -- one run --------------------------------------------------------------------------
    def start_claimed(self, run: Row) -> None:
        """Resolve, lay out and start a run this agent holds. Failures fail the run only."""
        run_id = run["id"]
        try:
            if run["cancel_requested"]:
                move(
                    self.store,
                    run_id,
                    State.STOPPED,
                    agent_id=self.id,
                    reason="cancelled",
                    expect=frozenset({State.CLAIMED}),
                )
                return
            launch, note = self._prepare(run)
            move(
                self.store,
                run_id,
                State.STARTING,
                agent_id=self.id,
                message=note,
                workdir=str(launch.workdir),
                log_path=str(launch.log_path),
                expect=frozenset({State.CLAIMED}),
            )
            handle = runners.get(run["resource"]).start(launch)
            pid = handle.pid
            move(
                self.store,
                run_id,
                State.RUNNING,
                agent_id=self.id,
                message=f"pid {pid}" if pid else None,
                pid=pid,
                pid_started=handle.pid_started,
                started_at=time.time(),
                expect=frozenset({State.STARTING}),
            )
            self.active[run_id] = Active(run_id, handle)
            self.say(
                f"started run {run_id} ({run['name']}) from queue {run['queue_name'] or '(direct)'}"
            )
        except RunnerError as exc:
            self._fail(run_id, exc.stage, str(exc))
        except LaunchctlError as exc:
            self._fail(run_id, "agent", str(exc))
        except Exception as exc:  # one failing run never stops the agent
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            self._fail(run_id, "agent", f"internal error: {detail}")

    def _prepare(self, run: Row) -> tuple[Launch, str]:
        spec = run["spec"]
        overrides = spec.get("overrides") or {}
        version = (
            self.store.jobs.version_by_id(run["job_version_id"])
            if run["job_version_id"] is not None
            else None
        )
        entry = overrides.get("entry_point") or (version["entrypoint"] if version else [])
        command = [*entry, *(overrides.get("args") or [])]
        if not command:
            raise RunnerError("the run has no entry point to execute", stage="agent")
        folder = self.store.run_dir(run["id"])
        workdir = folder / "code"
        note = workspace.prepare(self.store, run, version, workdir)
        resource_args = self._resource_args(run)
        env = dict(os.environ)
        env.update(self.options.env)
        env.update(env_from_option(resource_args.get("env")))
        env.update(run_environment(run))
        # The run sees the agent's Python first, as if its virtualenv were active.
        bindir = os.path.dirname(sys.executable)
        if bindir not in env.get("PATH", "").split(os.pathsep):
            env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
        env.setdefault("PYTHONUNBUFFERED", "1")
        launch = Launch(
            run=run,
            command=command,
            env=env,
            workdir=workdir,
            log_path=folder / "output.log",
            resource_args=resource_args,
            on_exit=self.waker.wake,
        )
        return launch, note

    def _resource_args(self, run: Row) -> dict[str, Any]:
        """The queue's resource args for this run's resource, then the run's own on top."""
        queue = self.store.queues.by_id(run["queue_id"]) if run["queue_id"] is not None else None
        merged: dict[str, Any] = {}
        if queue is not None:
            merged.update((queue["config"].get("resource_args") or {}).get(run["resource"]) or {})
        merged.update((run["spec"].get("resource_args") or {}).get(run["resource"]) or {})
        return merged

    def _finish(self, run_id: str, result: Exit, stop_reason: str | None) -> None:
        fields: dict[str, Any] = {"exit_code": result.code}
        if stop_reason is not None:
            to, fields["reason"] = State.STOPPED, stop_reason
        elif result.code == 0:
            to = State.FINISHED
        else:
            to = State.FAILED
            fields["stage"] = "run"
            fields["reason"] = result.message or f"exit code {result.code}"
        try:
            move(
                self.store,
                run_id,
                to,
                agent_id=self.id,
                expect=frozenset({State.RUNNING}),
                **fields,
            )
        except StateConflict as exc:
            self.say(f"run {run_id}: {exc}")
            return
        how = fields.get("reason") or f"exit code {result.code}"
        self.say(f"run {run_id} {to.value} ({how})")

    def _fail(self, run_id: str, stage: str, reason: str) -> None:
        with contextlib.suppress(StateConflict):
            move(
                self.store,
                run_id,
                State.FAILED,
                agent_id=self.id,
                stage=stage,
                reason=reason,
                expect=frozenset(ACTIVE),
            )
        self.say(f"run {run_id} failed at stage {stage}: {reason}")
