"""The agent: claim runs from queues, start them, watch them, record how they end.

One pass of the loop is ``run_once``: collect started runs, reap finished ones,
pass on cancels, renew leases, claim and start new runs. ``run`` repeats it,
sleeping on a file watch of the store so new work starts within a fraction of a
second. Starting (which may build an image) happens in worker threads, except for
runs known to start in milliseconds (``start_claimed``), which start in the loop.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from launchctl import runners
from launchctl.agent.config import AgentOptions
from launchctl.agent.outcome import REQUEUE, TIMEOUT, record_exit
from launchctl.agent.plan import Plan, log_path, plan
from launchctl.agent.recovery import end_dead_leases
from launchctl.agent.stall import StallWatch
from launchctl.agent.starter import (
    Cancelled,
    Ready,
    StartContext,
    Started,
    Starter,
    agent_context,
    read_secrets,
)
from launchctl.agent.wake import Waker
from launchctl.errors import LaunchctlError, StateConflict, StoreBusy, stage_of
from launchctl.gpus.allocator import GpuAllocator
from launchctl.gpus.waiting import WAITING, Passed, live_gpu_agents, without_gpus
from launchctl.runners import Exit, Handle, local_process, logfile, spawned
from launchctl.runners.base import engine_state
from launchctl.runners.local_process import EXIT_FILE, PID_FILE
from launchctl.states import ACTIVE, TERMINAL, State, move
from launchctl.store import Row, Store, loads

if TYPE_CHECKING:  # a pool is made only for a run that starts slowly (issue 17: 2 ms a start)
    from concurrent.futures import Future, ThreadPoolExecutor

T = TypeVar("T")

# How long a run started in the loop may wait for its move to running to ride along in
# another commit (issue 17) before it gets one of its own.
ANNOUNCE_S = 0.02
# Issue 17: while an agent's runs are short (AHEAD_AFTER in a row each ended within
# AHEAD_RUN_S of its start) and its slots are full, it claims and prepares a slot's next
# run while the slot's run runs (a quick run: laid out, and moved to starting), and starts
# it the moment a slot frees. Never more than max_jobs run at once; the run held waits
# for a slot at most AHEAD_HOLD_S, then goes back to its queue (as it does when the agent
# stops, or is cancelled where it stands).
AHEAD_RUN_S = 0.1
AHEAD_AFTER = 4
AHEAD_HOLD_S = 1.0

# A job version whose code snapshot (compressed) is at most this size has its first run
# started in the agent's loop too: unpacking it takes a millisecond or two.
SMALL_SNAPSHOT = 256 * 1024

# How many passed-over runs an agent remembers (to leave them out of "is there work").
PASSED_KEPT = 500


@dataclass
class Following:
    """A run just claimed, to start once the claim's write has committed."""

    run: Row
    quick: bool  # started in the loop (``prepared``, None if it could not be); else a worker
    prepared: tuple[Starter, Ready] | None = None


@dataclass
class Active:
    """A run this agent has started and follows."""

    run_id: str
    handle: Handle
    stop_reason: str | None = None  # set when the agent asked it to stop
    deadline: float | None = None  # time.monotonic() past which it is stopped: timeout
    engine_said: str | None = None  # issue 14: the engine's last word, noted on the run
    run: Row | None = None  # the row as claimed: its end is recorded without reading it again
    since: float = field(default_factory=time.monotonic)  # when it started


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
        # SIGINT/SIGTERM: counted by the handler (``signalled``), acted on by the loop.
        self.signals = 0
        self._signals_done = 0
        # What the loop does for signal number N; returns a line to say, or None.
        self.signal_action: Callable[[int], str | None] = self.on_signal
        self._trouble: str | None = None  # the store error last said (said once)
        # Failures the store could not take when they happened (a full disk): retried.
        self._unrecorded: dict[str, tuple[str, str]] = {}
        self._unreturned: dict[str, str] = {}  # run id -> why: back to its queue when it can
        self._rr = 0
        self._renewed_at = 0.0
        self._status_at = time.monotonic()  # the start banner says it all first
        self._pool: ThreadPoolExecutor | None = None
        # Job versions (None: runs with no job) whose local-process runs start in the
        # loop: this agent started one quickly (issue 17, see ``start_claimed``).
        self._quick: set[int | None] = set()
        self._small: dict[int, bool] = {}  # job version id -> its snapshot is small
        # The last claim took a run, and none waits for GPUs here: the next claim is tried
        # without asking first whether one may be claimed (the claim itself tells).
        self._claimed_last = False
        # Runs started in the loop whose move to running is not made yet (issue 17): it
        # goes into the loop's next commit (their end's, or the next claim's), at most
        # ANNOUNCE_S later. run id -> (time.monotonic() at start, the move's fields).
        self._unannounced: dict[str, tuple[float, Callable[[], dict[str, Any]]]] = {}
        # "started run ..." lines of runs started in a slot whose last run's end is not
        # said yet: said after it (``reap``), in the order things happened to the runs.
        self._said_later: list[str] | None = None
        # The run claimed (and prepared) ahead for the next slot to free, and when: see
        # AHEAD_RUN_S. And how many runs in a row ended within AHEAD_RUN_S of their start.
        self._ahead: tuple[float, Following] | None = None
        self._ahead_version = 0  # the store's data_version when it was held
        self._short_runs = 0
        self._local = threading.local()
        self.waker = Waker(store.db.path, fallback_s=self.options.fallback_poll_s)
        self._link: spawned.Link | None = None  # the spawner whose exits the loop reads
        self._link_fd = -1
        self._loop_thread: int | None = None  # the thread that runs the loop, once it does
        self.gpus = GpuAllocator(store, self.options.gpus, self.id) if self.options.gpus else None
        # Runs this agent cannot give the GPUs they ask for, with why: they wait for another
        # agent (launchctl.gpus.waiting); a --burst agent fails them.
        self._passed = Passed()
        self._burst = False
        self._sweeps_said: dict[str, str] = {}  # issue 15: a sweep's trouble, said once
        # Issue 18: runs silent too long; a stall's hooks are owed by this agent (its
        # config's hooks, and the run's queue's).
        self.stalls = StallWatch(store, self.say, agent_id=self.id, hooks=self.options.hooks)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Check the queues and register. Raises for a missing queue: never wait silently.

        Serving a queue takes membership of the entity that owns it: the agent runs as
        its user (or ``LAUNCHCTL_USER``, a member's name for a service account).
        """
        from launchctl import teams

        self.queues = [self.store.queues.get(name) for name in self.queue_names]
        for queue in self.queues:
            runners.get(queue["resource"])  # refuse a queue this agent cannot run
            teams.require_member(
                self.store, queue["entity"], action=f"serve queue {queue['name']} of"
            )
        self.store.agents.register(
            self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=self.queue_names,
            max_jobs=self.options.max_jobs,
        )
        if self.gpus is not None and (freed := self.gpus.start()):
            self.say(f"freed {freed} GPU allocations that no held run stands behind")
        self._renewed_at = time.monotonic()
        self.recover()

    def recover(self) -> None:
        """Find runs of this host's dead agents: adopt them, and hold their queues.

        After an unclean stop, queues with waiting work are paused (unless
        ``resume_queues``): whatever killed the agent may still be there, and a backlog
        of runs should not start by surprise. ``queue resume`` or ``--resume-queues``.
        """
        dead = end_dead_leases(self.store, socket.gethostname(), self.id)
        self.take_over_expired()
        if not dead or self.options.resume_queues:
            return
        served = {name for agent in dead for name in (loads(agent["queues"]) or [])}
        for queue in self.queues:
            waiting = self.store.queues.counts(queue["id"]).get("queued", 0)
            if queue["name"] in served and waiting and not queue["paused"]:
                self.store.queues.update(queue["name"], paused=True)
                self.say(
                    f"paused queue {queue['name']}: an agent serving it stopped uncleanly, and"
                    f" {waiting} runs wait; check the machine, then `launchctl queue resume"
                    f" {queue['name']}` (or start the agent with --resume-queues)"
                )

    def take_over_expired(self) -> None:
        """Take over held runs whose lease expired (their agent is gone) and adopt them."""
        host = socket.gethostname()
        for run in self.store.runs.expired(host, queue_ids=[q["id"] for q in self.queues]):
            taken = self.store.runs.take_over(run["id"], self.id, self.options.lease_s)
            if taken is not None:
                self.say(f"took over run {run['id']} from agent {run['agent_id']}")
                self._adopt(taken)

    def _adopt(self, run: Row) -> None:
        """Follow a taken-over run again, or record what can be known of how it ended."""
        state = run["state"]
        if state in (State.CLAIMED, State.BUILDING):
            with _quiet_conflict():
                move(self.store, run["id"], State.QUEUED, agent_id=self.id,
                     message="requeued: its agent was lost before the run started",
                     expect=frozenset({State(state)}))  # fmt: skip
            return
        planned = self._plan_of(run)
        try:
            found = runners.get(run["resource"]).adopt(
                run,
                log_path(self.store.root, run["id"]),
                self.waker.wake,
                self._secrets_of(planned),
            )
        except Exception as exc:  # an engine that is down: say so, keep the run truthful
            found = None
            self.say(f"run {run['id']}: could not look for it: {exc}")
        if found is None:
            if state == State.STARTING:
                with _quiet_conflict():
                    move(self.store, run["id"], State.QUEUED, agent_id=self.id,
                         message="requeued: its agent was lost while starting it, and it never"
                         " started", expect=frozenset({State.STARTING}))  # fmt: skip
                return
            lost = "agent lost: the run's process is gone and its exit code is unknown"
            self._fail(self.store, run["id"], "agent", lost)
            return
        folder = log_path(self.store.root, run["id"]).parent
        if state == State.STARTING:
            # It started while no agent watched: from when its wrapper shell began (its pid
            # file), else from its move to starting (a spawner, which writes no pid file,
            # starts a run as soon as that move is committed).
            wrapper = logfile.mtime(folder / PID_FILE)
            began = _within(wrapper or run["updated_at"], run["updated_at"], time.time())
            with _quiet_conflict():
                move(self.store, run["id"], State.RUNNING, agent_id=self.id,
                     message="adopted after its agent was lost", started_at=began,
                     expect=frozenset({State.STARTING}))  # fmt: skip
        if isinstance(found, Exit):
            self._finish(run["id"], found, None)
            self._ended_unwatched(run["id"], logfile.mtime(folder / EXIT_FILE))
            return
        self.store.runs.note(run["id"], "adopted: following it again after its agent was lost")
        deadline = self._deadline_of(run, planned)
        self.active[run["id"]] = Active(run["id"], found, deadline=deadline)

    def _ended_unwatched(self, run_id: str, at: float | None) -> None:
        """A run that ended while no agent watched it ends when it ended (its exit-code
        file's time), not when an agent found it: its runtime leaves out the gap."""
        run = self.store.runs.get(run_id)
        if at is None or run["state"] not in TERMINAL or run["ended_at"] is None:
            return
        ended = _within(at, run["started_at"] or at, run["ended_at"])
        if run["ended_at"] - ended < 1.0:
            return
        self.store.runs.update(run_id, ended_at=ended)
        gap = run["ended_at"] - ended
        self.store.runs.note(
            run_id, f"it ended {gap:.0f}s before this agent took it over, while no agent"
            " watched it: its runtime counts to its real end"
        )  # fmt: skip

    def _plan_of(self, run: Row) -> Plan | None:
        """An adopted run's plan, made again as its start made it (launchctl.agent.plan):
        its secrets to mask and its max_run_time. None when it no longer plans (its rules
        changed meanwhile): the run goes on, unlimited."""
        try:
            queue = self.store.queues.by_id(run["queue_id"]) if run["queue_id"] else None
            version = (
                self.store.jobs.version_by_id(run["job_version_id"])
                if run["job_version_id"] is not None
                else None
            )
            return plan(run, version, queue, agent_context(self._context(), self.store.root))
        except Exception:
            return None

    def _secrets_of(self, planned: Plan | None) -> list[str]:
        """The secret values an adopted run may print, to mask them in what is copied now."""
        if planned is None:
            return []
        try:  # a missing secret cannot leak: the others are still masked
            return planned.masks(read_secrets(planned.secret_names, missing_ok=True))
        except Exception:  # an unsafe secrets file: the rest of the run goes on
            return []

    def _deadline_of(self, run: Row, planned: Plan | None) -> float | None:
        """An adopted run keeps its max_run_time, counted from when it started."""
        limit = planned.limits.max_run_time if planned is not None else None
        if limit is None or run["started_at"] is None:
            return None
        return time.monotonic() + max(0.0, run["started_at"] + limit - time.time())

    @property
    def capacity(self) -> int:
        if self.options.max_jobs < 0:
            return sys.maxsize
        return max(0, self.options.max_jobs - len(self.active) - len(self.starting))

    @property
    def busy(self) -> bool:
        return bool(
            self.active
            or self.starting
            or self._unrecorded
            or self._unreturned
            or self._unannounced
            or self._ahead is not None
        )

    def drain(self) -> None:
        """First signal: stop claiming; running runs finish."""
        self.draining = True
        self.waker.wake()

    def signalled(self) -> None:
        """Called from a SIGINT/SIGTERM handler: count it and wake the loop, nothing more.

        A handler runs in the main thread wherever that thread was, so it must take no
        lock: one the interrupted code holds (an event's, a run handle's, a thread
        start's) would never be released. The loop does what the signal asks
        (``signal_action``, by default ``on_signal``) at the top of its next pass.
        """
        self.signals += 1
        self.waker.wake()  # a pipe write (see launchctl.agent.wake.PipeEvent)

    def handle_signals(self, action: Callable[[int], str | None] | None = None) -> None:
        """Send this process's SIGINT and SIGTERM to the agent (``signalled``), and with
        ``action``, do that for signal number N instead of ``on_signal``. Call it from the
        main thread: Python runs handlers there."""
        import signal

        if action is not None:
            self.signal_action = action

        def handler(_sig: int, _frame: Any) -> None:
            self.signalled()  # counted and woken only: the loop acts on it (no lock here)

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def _take_signals(self) -> None:
        """What the signals counted since the last pass ask for, each said in a line."""
        while self._signals_done < self.signals:
            self._signals_done += 1
            line = self.signal_action(self._signals_done)
            if line:
                self.say(line)

    def on_signal(self, count: int) -> str:
        """SIGINT/SIGTERM number ``count``: what the agent does, in words for the user."""
        if self.options.requeue_running:
            self.stop_all(REQUEUE)
            return "draining for maintenance: running runs are stopped and requeued"
        if count == 1:
            self.drain()
            return (
                "stopping: no new runs will be claimed; running runs finish"
                " (signal again to stop them)"
            )
        self.stop_all()
        return "stopping running runs"

    def interrupt(self, count: int) -> None:
        """The signal action of an agent that serves one direct launch: the first signal
        stops its run as interrupted, a later one as killed."""
        self.stop_all("interrupted" if count == 1 else "killed")

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
        threading.excepthook = self._thread_failed
        self._loop_thread = threading.get_ident()
        self._burst = burst
        self.waker.start()
        try:
            while True:
                wait = self.options.fallback_poll_s
                try:
                    self._take_signals()
                    self.run_once()
                    if not self.busy and (self.draining or (burst and not self._work_left())):
                        break
                    wait = self.next_wake()
                    self._store_trouble(None)
                    self._status()
                except LaunchctlError as exc:  # the store cannot be written (a full disk)...
                    self._store_trouble(exc)  # ...: say so, and try again; never die of it
                    if not self.busy and self.draining:
                        break
                self.waker.wait(wait)
        finally:
            self.waker.close()
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            if self._ahead is not None:  # only where the loop itself failed: back in line
                with contextlib.suppress(Exception):
                    self._give_back_ahead("the agent stopped before a slot freed for it")
            from launchctl.sweeps import scheduler

            scheduler.release(self.store, self.id)  # issue 15: its sweeps, at once
            self.store.agents.stopped(self.id)

    def close(self) -> None:
        """After ``run``, once nothing more is written: the agent's store connection closed
        (its WAL folded back into the file), and its store watch handed to its spawner to
        close. Issue 17: the kernel's teardown of a file watch (an RCU grace period) held
        up the agent's exit 5-25 ms here, a twentieth of a 500-run ``--burst`` drain; the
        spawner, which nobody waits for, pays it instead."""
        from launchctl.agent.wake import watch_descriptors

        self.store.close()
        link = spawned.current()
        if link is not None:
            link.hand_over(watch_descriptors())

    def _status(self) -> None:
        """A status line now and then, as W&B's agent prints one: every 5 minutes, every
        20 seconds with -v (its DEFAULT_PRINT_INTERVAL and VERBOSE_PRINT_INTERVAL)."""
        every = 20.0 if self.options.verbosity >= 1 else 300.0
        now = time.monotonic()
        if now - self._status_at < every:
            return
        self._status_at = now
        limit = "unlimited" if self.options.max_jobs < 0 else str(self.options.max_jobs)
        polling = (
            f"polling on queues {', '.join(self.queue_names)}, "
            if self.options.max_jobs < 0 or len(self.active) < self.options.max_jobs
            else ""
        )
        self.say(f"agent {self.id} {polling}running {len(self.active)} of at most {limit} runs")

    def _store_trouble(self, exc: LaunchctlError | None) -> None:
        """A pass that failed on the store: said once (not every pass), then retried.

        What it could not record (a run's end, a failure) is kept and recorded once the
        store can be written again, e.g. when a full disk has room again. ``None``: a pass
        went through.
        """
        if exc is None:
            if self._trouble is not None:
                self._trouble = None
                self.say("the store can be written again; carrying on")
            return
        if str(exc) != self._trouble:
            self._trouble = str(exc)
            self.say(f"cannot write the store: {exc}; trying again every"
                     f" {self.options.fallback_poll_s:g}s")  # fmt: skip

    def _thread_failed(self, args: threading.ExceptHookArgs) -> None:
        """A helper thread's bug is one line in the agent's output, never a traceback."""
        name = args.thread.name if args.thread else "a thread"
        self.say(f"internal error in {name}: {args.exc_type.__name__}: {args.exc_value}")

    def run_once(self) -> int:
        """One pass: collect, reap, cancel, renew, claim. Returns how many runs were claimed."""
        with self.store.db.one_pass():
            return self._pass()

    def _pass(self) -> int:
        self.collect_started()
        self._announce_due()
        self.reap()
        self.schedule_sweeps()
        self.enforce_deadlines()
        self.stalls.check(self.active, self._stop_stalled)
        self.apply_cancels()
        self.renew()
        if self.draining:
            self._give_back_ahead("the agent stopped before a slot freed for it")
            return 0
        if self._ahead is not None and time.monotonic() - self._ahead[0] > AHEAD_HOLD_S:
            self._give_back_ahead(f"no slot freed for it within {AHEAD_HOLD_S:g} s")
        return self.claim_and_start()

    def schedule_sweeps(self) -> None:
        """Issue 15: the sweeps of the queues served here get their next trials (their
        ended trials scored first), so a trial that ends is followed by the next one in
        the same pass. A sweep's trouble is said once; it never stops the agent."""
        from launchctl.sweeps import scheduler

        scheduler.serve(
            self.store, self.queue_names, self.id, launch_new=not self.draining,
            say=self.say, said=self._sweeps_said,
        )  # fmt: skip

    # -- steps ----------------------------------------------------------------------------
    def collect_started(self) -> None:
        for run_id, future in list(self.starting.items()):
            if not future.done():
                continue
            del self.starting[run_id]
            active = future.result()
            if active is not None:
                self._follow(active)

    def _follow(self, active: Active) -> None:
        """A run just started: followed from now on (stopped at once if the agent stops)."""
        self.active[active.run_id] = active
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

    def _stop_stalled(self, active: Active, reason: str) -> None:
        """Issue 18: a stalled run of a queue with ``on_stall: stop`` is stopped, as a
        timeout is; it ends failed with ``reason``."""
        if active.stop_reason is None:
            active.stop_reason = reason
            active.handle.stop(self.options.grace_s)
            self.say(f"stopping run {active.run_id}: {reason}")

    def next_wake(self) -> float:
        """Seconds to sleep: the fallback poll, or less when a deadline comes sooner."""
        wait = self.options.fallback_poll_s
        # A run waiting out a retry backoff needs a free slot; with none, a run's end
        # wakes the loop first (and this query, a scan of the queue, is left out).
        if not self.draining and self.capacity > 0:
            retry_at = self.store.runs.next_retry_at(q["id"] for q in self.queues)
            if retry_at is not None:
                wait = min(wait, max(0.0, retry_at - time.time()) + 0.01)
        now = time.monotonic()
        for active in self.active.values():
            if active.deadline is not None and not active.stop_reason:
                wait = min(wait, max(0.0, active.deadline - now) + 0.01)
        stall_at = self.stalls.next_check()
        if stall_at is not None:
            wait = min(wait, max(0.0, stall_at - now) + 0.01)
        if self._unannounced:
            wait = min(wait, ANNOUNCE_S)
        if self._ahead is not None:  # given back if no slot frees for it in time
            wait = min(wait, max(0.0, self._ahead[0] + AHEAD_HOLD_S - now) + 0.01)
        return wait

    def use_spawner(self) -> None:
        """Start this agent's plain local-process runs through one spawner process rather
        than a wrapper shell each (issue 17; see ``launchctl.runners.spawned``), started
        now, so it is up by the time the first run is. The agent command does this: a
        direct launch's agent starts one run, for which a shell is quicker."""
        spawned.enable()
        shared = local_process.reaper()
        if spawned.available() and shared is not None:
            spawned.link(shared)

    def _run_ended(self) -> None:
        """A run's end, told by another thread, wakes the loop; told in the loop (its
        spawner's news, read in ``reap``), it is seen in the same pass."""
        if threading.get_ident() != self._loop_thread:
            self.waker.wake()

    def _spawner_news(self) -> None:
        """Issue 17: the loop reads its spawner's exits pipe itself (its ``wait`` wakes on
        it), so a run's end reaches it with no hand-over from the reaper thread."""
        link = spawned.current()
        if self._link is not None and (link is not self._link or self._link.lost):
            self.waker.event.unwatch(self._link_fd)  # lost: a new one, or none yet
            self._link = None
        if link is not None and self._link is None and not link.lost:
            self._link, self._link_fd = link, link.take_exits()
            self.waker.event.watch(self._link_fd)
        if self._link is not None:
            self._link.drain()

    def reap(self) -> None:
        self._spawner_news()
        for run_id, (stage, reason) in list(self._unrecorded.items()):
            self._fail(self.store, run_id, stage, reason)  # failures a full store refused
        for run_id, why in list(self._unreturned.items()):
            self._give_back(self.store, run_id, why)  # runs a busy store kept from their queue
        for run_id, active in list(self.active.items()):
            result = active.handle.poll()
            if result is None:
                self._note_engine_state(active)
                continue
            # The slot it frees is filled first, when a run likely waits: its claim and
            # (a quick run) its move to starting commit, and its process starts; this
            # run's end is recorded next, in a commit of its own (issue 17: the slot no
            # longer waits for that record; about 1% of a 500-run drain here). Not where the
            # end's record frees what the next claim may need: GPUs (the trigger frees
            # them) are claimed after it, in its commit. A run held back by a limit the
            # end frees (an array's %N, a queue's per_user), or waiting for this run, is
            # claimed later in the pass (``claim_and_start``), once the end is recorded.
            following = None
            later: list[str] = []
            if self.gpus is None and self._claims_in_reap():
                following = self._take_ahead()
                if following is None:
                    with self.store.db.write():
                        following = self._claim_next()
                if following is not None:
                    self._said_later = later
                    try:
                        self._start_next(following)
                    finally:
                        self._said_later = None
                following = None
            # Forgotten only once recorded: a store that cannot be written now (a full
            # disk) raises here, and the next pass records it again. A run started in the
            # loop and not yet recorded running is, in the same commit as its end.
            try:
                with self.store.db.write():
                    announced = self._finish(run_id, result, active.stop_reason, active.run)
                    if self.gpus is not None and self._claims_in_reap():
                        following = self._claim_next()
            finally:
                for line in later:
                    self.say(line)
            self._announced(announced)
            del self.active[run_id]
            active.handle.release()
            if following is not None:
                self._start_next(following)
            short = time.monotonic() - active.since < AHEAD_RUN_S
            self._short_runs = self._short_runs + 1 if short else 0
            if self._holds_ahead():
                self._hold_next()

    def _holds_ahead(self) -> bool:
        """Whether to claim and prepare the next run now, for the next slot to free (see
        AHEAD_RUN_S): the agent's runs are short, its slots full, and a run likely waits."""
        return (
            self._ahead is None
            and self._short_runs >= AHEAD_AFTER
            and self.gpus is None
            and not self.draining
            and self._claimed_last
            and self.options.max_jobs > 0
            and len(self.active) + len(self.starting) >= self.options.max_jobs
        )

    def _hold_next(self) -> None:
        with self.store.db.write():
            following = self._claim_next()
        if following is not None and (not following.quick or following.prepared is not None):
            self._ahead = (time.monotonic(), following)
            self._ahead_version = self.store.db.data_version()

    def _take_ahead(self) -> Following | None:
        """The run held for the next slot (to start now), if any, and if it may still
        start (``_still_may_start``)."""
        if self._ahead is None:
            return None
        following = self._ahead[1]
        if self.store.db.data_version() != self._ahead_version and not self._still_may_start(
            following.run
        ):
            return None
        self._ahead = None
        return following

    def _still_may_start(self, run: Row) -> bool:
        """Another process wrote the store while the run was held: its queue and its rules
        are read again, as its start read them (a member an admin removed meanwhile is
        refused, ``Starter._read``). A run of a queue paused meanwhile goes back to it; one
        that breaks its queue's rules now fails, never started."""
        queue = self.store.queues.by_id(run["queue_id"]) if run["queue_id"] is not None else None
        if queue is not None and queue["paused"]:
            self._give_back_ahead("its queue was paused while it waited for a slot")
            return False
        try:
            Starter(self.store, self._context())._read(run)
        except LaunchctlError as exc:
            self._ahead = None
            self._fail(self.store, run["id"], stage_of(exc), str(exc))
            return False
        return True

    def _cancel_ahead(self, run_id: str) -> None:
        """The run held for the next slot was cancelled: it ends stopped, never started
        (forgotten once that is recorded: a store that cannot be written now raises here,
        and the next pass tries again)."""
        with _quiet_conflict():
            move(self.store, run_id, State.STOPPED, agent_id=self.id, reason="cancelled",
                 expect=frozenset({State.CLAIMED, State.STARTING}))  # fmt: skip
        self._ahead = None
        self.say(f"run {run_id} stopped before it started (cancelled)")

    def _give_back_ahead(self, why: str) -> None:
        """The run held for the next slot goes back to its queue, never started (forgotten
        once that is recorded, as ``_cancel_ahead``)."""
        if self._ahead is None:
            return
        run_id = self._ahead[1].run["id"]
        with _quiet_conflict():
            move(self.store, run_id, State.QUEUED, agent_id=self.id,
                 message=f"requeued: {why}",
                 expect=frozenset({State.CLAIMED, State.STARTING}))  # fmt: skip
        self._ahead = None
        self.say(f"run {run_id} back in its queue: {why}")

    def _note_engine_state(self, active: Active) -> None:
        """Issue 14: a cluster runner's word for a run its engine has not started yet
        (``queued on the engine: ...``), noted on the run (``runs show``) when it changes."""
        said = engine_state(active.handle)
        if said is not None and said != active.engine_said:
            active.engine_said = said
            self.store.runs.note(active.run_id, said)

    def apply_cancels(self) -> None:
        if not self.active and self._ahead is None:
            return
        for run_id in self.store.runs.cancels_held_by(self.id):
            if self._ahead is not None and self._ahead[1].run["id"] == run_id:
                self._cancel_ahead(run_id)
                continue
            active = self.active.get(run_id)
            if active is not None and active.stop_reason is None:
                active.stop_reason = "cancelled"
                active.handle.stop(self.options.grace_s)
                self.say(f"stopping run {run_id}: cancelled")

    def renew(self) -> None:
        now = time.monotonic()
        if now - self._renewed_at < self.options.lease_s / 3:
            return
        self._renewed_at = now
        if self.busy:
            self.store.runs.renew_leases(self.id, self.options.lease_s)
        self.store.agents.heartbeat(self.id)
        end_dead_leases(self.store, socket.gethostname(), self.id)
        if not self.draining:
            self.take_over_expired()

    def claim_and_start(self) -> int:
        self._end_doomed()
        claimed_count = 0
        if self._ahead is not None and self.capacity > 0:  # a free slot takes it first
            following = self._take_ahead()
            if following is not None:
                self._start_next(following)
                claimed_count += 1
        n = len(self.queues)
        while self.capacity > 0 and n and (self._claimed_last or self._claimable()):
            # Issue 17: a quick run's claim and its move to starting are one commit; its
            # process starts once that commit is made (never before: exactly once).
            with self.store.db.write():
                announced = self._announce(list(self._unannounced))
                following = self._claim_next()
            self._announced(announced)
            if following is None:
                break
            claimed_count += 1
            self._start_next(following)
        return claimed_count

    def _claim_next(self) -> Following | None:
        """Inside a write: claim the next run of the queues served (round robin), and
        prepare it if it is quick (its move to starting, in the same write)."""
        claimed = None
        n = len(self.queues)
        for i in range(n):
            queue = self.queues[(self._rr + i) % n]
            claimed = self._claim(queue)
            if claimed is not None:
                self._rr = (self._rr + i + 1) % n
                break
        self._claimed_last = claimed is not None and not self._passed.reasons
        if claimed is None:
            return None
        if not self._is_quick(claimed):
            return Following(claimed, quick=False)
        return Following(claimed, quick=True, prepared=self._prepare_here(claimed))

    def _start_next(self, following: Following) -> None:
        """Once the write that claimed it has committed: start a claimed run."""
        if not following.quick:
            self.start_claimed(following.run)
        elif following.prepared is not None:
            self._launch_here(*following.prepared)

    def _claims_in_reap(self) -> bool:
        """Whether a run's end makes room for a claim in the same commit (issue 17): the
        last claim took a run, so one likely waits, and the agent is not draining."""
        if self.draining or not self.queues or not self._claimed_last:
            return False
        if self.options.max_jobs < 0:
            return True
        return len(self.active) - 1 + len(self.starting) < self.options.max_jobs

    def _end_doomed(self) -> None:
        """Issue 18: a queued run whose dependencies can no longer be met (an --after-ok
        one failed) ends failed at stage agent, saying which: in the store, one
        transaction, by whichever agent serving its queue gets there first."""
        from launchctl.workflow import doom_reason

        ids = [q["id"] for q in self.queues]
        for run_id, why in self.store.runs.end_doomed(ids, self.id, doom_reason):
            self.say(f"run {run_id} failed: {why}")

    def _claim(self, queue: Row) -> Row | None:
        """The queue's next run this agent can give what it asks for; with GPUs, the next
        that fits, claimed with its devices. A run asking for GPUs it cannot have waits,
        saying why (see ``launchctl.gpus.waiting``)."""
        passed = Passed()
        if self.gpus is not None:
            claimed = self.gpus.claim(queue["id"], self.options.lease_s, passed)
        else:
            choose = without_gpus(self.id, passed)
            claimed = self.store.runs.claim_first(
                queue["id"], self.id, self.options.lease_s, choose
            )
        for run_id, why in passed.reasons.items():
            self._pass_over(queue, run_id, why)
        return claimed

    def _pass_over(self, queue: Row, run_id: str, why: str) -> None:
        """A run this agent cannot give its GPUs: it waits, saying why; with --burst it
        fails, unless another live agent serving its queue may have them."""
        if len(self._passed.reasons) >= PASSED_KEPT:
            self._passed.reasons.clear()  # found again by the next claims that pass them
        self._passed.reasons[run_id] = why
        if self._burst and not live_gpu_agents(self.store, queue["name"], self.id):
            if self.store.runs.claim(run_id, self.id, self.options.lease_s) is not None:
                self._fail(self.store, run_id, "agent", why)
            return
        if self.store.runs.note_waiting(run_id, WAITING + why):
            self.say(f"run {run_id} waits: {why}")

    def _work_left(self) -> bool:
        """For --burst: runs to claim now, or runs waiting out a retry backoff."""
        ids = [q["id"] for q in self.queues]
        return self._claimable() or self.store.runs.next_retry_at(ids) is not None

    def _claimable(self) -> bool:
        """Whether a waiting run may be claimed now, besides those left to other agents."""
        ids = [q["id"] for q in self.queues]
        return self.store.runs.has_queued(ids, besides=self._passed.reasons)

    # -- one run --------------------------------------------------------------------------
    def start_claimed(self, run: Row) -> None:
        """Start a run this agent holds, in a worker thread; the loop collects its handle.

        Issue 17: a local-process run of a job version this agent has started quickly
        before (its snapshot unpacked and kept, see ``Started.quick``) starts in the loop
        itself: milliseconds of work, where handing it to a thread and back cost as much
        again, and a second connection's turn at the store.
        """
        if self._is_quick(run):
            active = self._start(run, self.store)
            if active is not None:
                self._follow(active)
            return
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

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

    def _context(self) -> StartContext:
        return StartContext(
            agent_id=self.id,
            env=self.options.env,
            builder=self.options.builder,
            registry=self.options.registry,
            on_exit=self._run_ended,
            progress=self.options.progress,
            secure_mode=self.options.secure_mode,
            say=self.say,  # build steps reach the agent's terminal and its -l log file
        )

    def _is_quick(self, run: Row) -> bool:
        """Whether ``run`` starts in the loop (see ``start_claimed``): a local-process run
        of a job version this agent started quickly before, or whose code snapshot is
        small enough to unpack in the loop the first time (its first runs started in a
        worker thread with a connection of its own: tens of milliseconds of an agent's
        start, issue 17)."""
        if run["resource"] != "local-process":
            return False
        version_id = run["job_version_id"]
        if version_id in self._quick:
            return True
        small = self._small.get(version_id)
        if small is None:
            small = self._small[version_id] = self._small_snapshot(version_id)
        return small

    def _small_snapshot(self, version_id: int) -> bool:
        """Whether a job version's code is a snapshot of at most SMALL_SNAPSHOT bytes (a
        git job's clone, or anything unreadable, is left to a worker thread)."""
        try:
            version = self.store.jobs.version_by_id(version_id)
            digest = version["source"].get("snapshot")
            if digest is None:
                return False
            row = self.store.db.one(
                "SELECT length(data) AS size FROM snapshots WHERE digest = ?", [digest]
            )
        except LaunchctlError:
            return False
        return row is not None and row["size"] is not None and row["size"] <= SMALL_SNAPSHOT

    def _prepare_here(self, run: Row) -> tuple[Starter, Ready] | None:
        """A quick run prepared in the loop, inside the transaction that claimed it; None
        when it could not be (it ended, or went back to its queue, saying why)."""
        starter = Starter(self.store, self._context())

        def prepare() -> Ready:
            self._check_start(self.store, run)
            return starter.prepare(run, in_claim=True)

        ready = self._guarded(self.store, run, prepare)
        return None if ready is None else (starter, ready)

    def _launch_here(self, starter: Starter, ready: Ready) -> None:
        """Start a quick run's process in the loop, its move to starting committed; its
        move to running waits for the loop's next commit (``_announce``)."""

        def launch() -> Started:
            return starter.launch(ready, record=False)

        started = self._guarded(self.store, ready.run, launch)
        if started is None:
            return
        if started.running is not None:
            self._unannounced[ready.run["id"]] = (time.monotonic(), started.running)
        self._follow(self._started(ready.run, started))

    def _announce(self, run_ids: list[str]) -> list[str]:
        """Move these runs started in the loop to running, inside the caller's write.
        Returns those done (recorded, or no longer the agent's to record): forget them
        with ``_announced`` once that write has committed, never before."""
        done = []
        for run_id in run_ids:
            entry = self._unannounced.get(run_id)
            if entry is None:
                continue
            try:
                move(self.store, run_id, State.RUNNING, agent_id=self.id,
                     expect=frozenset({State.STARTING}), **entry[1]())  # fmt: skip
            except StateConflict as exc:  # another agent took it over meanwhile
                self.say(f"run {run_id}: {exc}")
            done.append(run_id)
        return done

    def _announced(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            self._unannounced.pop(run_id, None)

    def _announce_due(self) -> None:
        """Runs started in the loop ANNOUNCE_S ago or more are recorded running now."""
        now = time.monotonic()
        due = [r for r, (at, _f) in self._unannounced.items() if now - at >= ANNOUNCE_S]
        if due:
            with self.store.db.write():
                announced = self._announce(due)
            self._announced(announced)

    def _start(self, run: Row, store: Store | None = None) -> Active | None:
        """Start ``run`` (``store``: the loop's own, when it starts in the loop; else this
        worker thread's)."""
        use = store or self._thread_store()
        starter = Starter(use, self._context())

        def start() -> Started:
            self._check_start(use, run)
            return starter.start(run)

        started = self._guarded(use, run, start)
        return None if started is None else self._started(run, started)

    def _check_start(self, store: Store, run: Row) -> None:
        """Before a start: a run cancelled meanwhile stops (a later attempt's log says
        where it begins: ``launchctl.agent.starter.mark_attempt``)."""
        if run["cancel_requested"]:
            raise Cancelled(run["id"])

    def _guarded(self, store: Store, run: Row, step: Callable[[], T]) -> T | None:
        """``step`` of a run's start; what it raises ends the run (or sends it back to its
        queue) with why, and gives None: one failing run never stops the agent."""
        run_id = run["id"]
        try:
            return step()
        except Cancelled:
            with _quiet_conflict():
                move(store, run_id, State.STOPPED, agent_id=self.id, reason="cancelled",
                     expect=frozenset({State.CLAIMED, State.BUILDING}))  # fmt: skip
            self.say(f"run {run_id} stopped before it started (cancelled)")
            return None
        except StoreBusy as exc:
            # Contention is not the run's fault: it goes back to its queue (its process,
            # if one started, was stopped), and the next pass claims it again (issue 19).
            self._give_back(store, run_id, str(exc))
            return None
        except LaunchctlError as exc:  # a RunnerError says its stage; any other: agent
            self._fail(store, run_id, stage_of(exc), str(exc))
            return None
        except Exception as exc:  # one failing run never stops the agent
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            self._fail(store, run_id, "agent", f"internal error: {detail}")
            return None

    def _started(self, run: Row, started: Started) -> Active:
        """A run whose process started: said, and followed from now on."""
        if started.quick:
            self._quick.add(run["job_version_id"])
        else:  # not kept (too big for the cache): its next runs unpack it in a worker
            self._small[run["job_version_id"]] = False
        queue = run["queue_name"] or "(direct)"
        line = f"started run {run['id']} ({run['name']}) from queue {queue}"
        if self._said_later is not None:
            self._said_later.append(line)
        else:
            self.say(line)
        deadline = None
        if started.max_run_time is not None:
            deadline = time.monotonic() + started.max_run_time
        return Active(run["id"], started.handle, deadline=deadline, run=run)

    def _finish(
        self, run_id: str, result: Exit, stop_reason: str | None, run: Row | None = None
    ) -> list[str]:
        """Record how a run ended, inside the caller's write. ``run``: its row as claimed
        (``record_exit`` reads only what a run never changes from it, its id and queue; the
        rest it reads anew). A run started in the loop whose move to running waits for a
        commit gets it here, with its end; returns it then, to forget once that write has
        committed (``_announced``)."""
        entry = self._unannounced.get(run_id)
        running = entry[1]() if entry is not None else None
        announced = [run_id] if entry is not None else []
        try:
            run = self.store.runs.get(run_id) if run is None else run
            outcome = record_exit(self.store, run, result, stop_reason, self.id, running=running)
        except StateConflict as exc:  # another agent took it over meanwhile
            self.say(f"run {run_id}: {exc}")
            return announced
        self.say(f"run {run_id} {outcome.state.value} ({outcome.summary})")
        return announced

    def _give_back(self, store: Store, run_id: str, why: str) -> None:
        """A claimed run whose start a busy store interrupted goes back to its queue; if the
        store is still busy, the loop's next pass tries again (``reap``)."""
        try:
            with _quiet_conflict():
                move(store, run_id, State.QUEUED, agent_id=self.id,
                     message=f"requeued: the store was busy while it started ({why})",
                     expect=frozenset({State.CLAIMED, State.BUILDING, State.STARTING}))  # fmt: skip
        except LaunchctlError:
            self._unreturned[run_id] = why
            return
        self._unreturned.pop(run_id, None)
        self.say(f"run {run_id} back in its queue: the store was busy while it started")

    def _fail(self, store: Store, run_id: str, stage: str, reason: str) -> None:
        try:
            with _quiet_conflict():
                move(store, run_id, State.FAILED, agent_id=self.id, stage=stage,
                     reason=reason, expect=frozenset(ACTIVE))  # fmt: skip
        except LaunchctlError:
            # The store cannot be written now (a full disk): the loop records it later.
            self._unrecorded[run_id] = (stage, reason)
            raise
        self._unrecorded.pop(run_id, None)
        first = reason.splitlines()[0] if reason else ""
        self.say(f"run {run_id} failed at stage {stage}: {first}")


def _within(value: float | None, low: float, high: float) -> float:
    """``value`` kept between ``low`` and ``high`` (``high`` when unknown)."""
    if value is None:
        return high
    return min(max(value, low), high)


def _quiet_conflict() -> Any:
    import contextlib

    return contextlib.suppress(StateConflict)
