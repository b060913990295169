"""The agent's watch for stuck runs (issue 18): see ``launchctl.stall`` for the queue keys.

``StallWatch.check`` runs once per agent pass over the runs the agent follows;
``next_check`` says when the loop must wake for it at the latest.

What it costs: one ``lstat`` of a run's log when the run is due (at the earliest when
its silence could reach ``stall_after``, and about once a second while it is stalled),
never a read of the log. A run's queue config is read at most every ``CONFIG_TTL_S``
per queue. The W&B transaction logs of a run are looked at only when its log is silent
long enough, NVML only when such a run has GPUs.

What it keeps is rebuilt from the store and the files: the last output is the log's
``mtime``, a run already marked has ``runs.stalled_at``. So an agent that adopts a run
after a restart goes on watching it, and does not mark it (or fire its hooks) again.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launchctl import paths
from launchctl.errors import LaunchctlError
from launchctl.stall import GPU_BUSY_PERCENT, STALLED, said, settings

if TYPE_CHECKING:
    from launchctl.store import Row, Store

CONFIG_TTL_S = 10.0  # a queue's stall_after is read again after this long
STALLED_EVERY_S = 1.0  # a stalled run's log is looked at this often (it may speak again)...
STALLED_EVERY_MAX_S = 10.0  # ... or a tenth of its stall_after, up to this
MIN_EVERY_S = 1.0  # ... and a run that is not yet running, or whose GPUs are sampled
DEADLINE_MIN_S = 0.1  # a look at the moment a run's silence reaches stall_after: at least
# this long after the one before (a run speaking pushes its deadline by up to stall_after,
# so a run is looked at about once per stall_after, never more than 10 times a second)
GPU_SAMPLES = 10  # GPU use is sampled about this many times per stall_after...
GPU_EVERY_MAX_S = 60.0  # ... at least this often
WANDB_FOLDERS = 8  # the newest W&B run folders of a run looked at

GpuReader = Callable[[list[int]], "int | None"]


def _nvml_busiest(indices: list[int]) -> int | None:
    from launchctl.gpus.usage import busiest

    return busiest(indices)


@dataclass
class _Watch:
    """One followed run, as the watch knows it."""

    run_id: str
    next_at: float = 0.0  # time.monotonic() of its next look
    known: bool = False  # its row was read while it was running
    queue_known: bool = False
    queue_id: int | None = None
    armed: bool = False  # its queue has a stall_after: the loop wakes for it
    log: Path | None = None
    wandb: list[Path] = field(default_factory=list)  # folders its W&B runs are in
    started_at: float = 0.0
    devices: list[int] = field(default_factory=list)
    stalled: float | None = None  # runs.stalled_at: its last output, when found stalled
    gpu_busy_at: float | None = None  # the last GPU sample at GPU_BUSY_PERCENT or more
    engine_wait_at: float | None = None  # the last look at which its engine had not started it
    trouble: bool = False  # a look failed (said once)


class StallWatch:
    """Finds running runs that are silent for their queue's ``stall_after``.

    ``agent_id`` and ``hooks`` (the agent config's) say who owes a stalled run's hooks
    (the agent passes its own; without ``agent_id``, the run's holder, and only the
    queue's hooks). ``gpu_use`` reads the highest
    compute use of a run's GPUs (NVML by default; a stand-in in tests).
    """

    def __init__(
        self,
        store: Store,
        say: Callable[[str], None],
        *,
        agent_id: str | None = None,
        hooks: Iterable[Mapping[str, Any]] | None = None,
        gpu_use: GpuReader | None = None,
    ) -> None:
        self.store = store
        self.say = say
        self.agent_id = agent_id
        self.hooks = list(hooks) if hooks is not None else None
        self.gpu_use: GpuReader = gpu_use or _nvml_busiest
        self._watches: dict[str, _Watch] = {}
        self._queues: dict[int, tuple[float, Row | None]] = {}

    # -- the seam ---------------------------------------------------------------------------
    def check(self, active: Mapping[str, Any], stop: Callable[[Any, str], None]) -> None:
        """Look at each followed run (``launchctl.agent.loop.Active``: its ``run_id``,
        ``handle``, ``run`` row as claimed); ``stop(active, reason)`` stops one
        (``on_stall: stop``)."""
        for run_id in [r for r in self._watches if r not in active]:
            self._forget(self._watches.pop(run_id))
        now = time.monotonic()
        for run_id, followed in active.items():
            if getattr(followed, "stop_reason", None) is not None:
                if run_id in self._watches:  # being stopped: the loop needs no wake for it
                    self._watches[run_id].armed = False
                continue
            watch = self._watches.get(run_id)
            if watch is None:
                watch = self._watches[run_id] = _Watch(run_id)
            elif now < watch.next_at:
                continue
            try:
                self._look(followed, watch, stop, now)
            except Exception as exc:  # a busy store, a bug: said once a run, never fatal
                watch.next_at = now + CONFIG_TTL_S
                if not watch.trouble:
                    watch.trouble = True
                    self.say(f"run {run_id}: could not check whether it is stalled: {exc}")

    def next_check(self) -> float | None:
        """``time.monotonic()`` by which the loop must pass again, or None."""
        due = [w.next_at for w in self._watches.values() if w.armed]
        return min(due) if due else None

    # -- one run ----------------------------------------------------------------------------
    def _look(
        self, followed: Any, watch: _Watch, stop: Callable[[Any, str], None], now: float
    ) -> None:
        if not watch.queue_known:  # from the row as claimed; an adopted run's is read
            claimed = getattr(followed, "run", None)
            if claimed is None:
                claimed = self.store.runs.find(watch.run_id)
            watch.queue_id = claimed.get("queue_id") if claimed is not None else None
            watch.queue_known = True
        queue = self._queue(watch.queue_id)
        rule = settings((queue or {}).get("config"))
        watch.armed = rule is not None
        if rule is None:  # no stall_after on its queue (now): the config is read again later
            watch.next_at = now + CONFIG_TTL_S
            if watch.stalled is not None:
                self._clear(watch, None)
            return
        if not watch.known and not self._know(watch):
            watch.next_at = now + MIN_EVERY_S  # not running yet (or gone): look again soon
            return
        stall_after, stop_it = rule
        wall = time.time()
        last = self._last_output(watch, wall, stall_after, followed)
        if watch.stalled is not None and last > watch.stalled:
            self._clear(watch, f"output again after {said(last - watch.stalled)} silent")
            self.say(f"run {watch.run_id} writes again: no longer stalled")
        silent = wall - last
        if watch.stalled is None and silent >= stall_after:
            self._mark(watch, queue, last, silent, stop_it)
        if watch.stalled is not None:
            if stop_it:
                stop(followed, STALLED)
            every = min(max(STALLED_EVERY_S, stall_after / 10), STALLED_EVERY_MAX_S)
            watch.next_at = now + every
            return
        wait = max(DEADLINE_MIN_S, stall_after - silent)
        if watch.devices:
            wait = min(wait, max(MIN_EVERY_S, min(stall_after / GPU_SAMPLES, GPU_EVERY_MAX_S)))
        watch.next_at = now + wait

    def _know(self, watch: _Watch) -> bool:
        """Read the run's row once it runs: its queue, files, GPUs, and a mark it has."""
        run = self.store.runs.find(watch.run_id)
        if run is None or run["state"] != "running":
            return False
        watch.known = True
        watch.queue_id = run["queue_id"]
        folder = paths.run_dir(watch.run_id, self.store.root)
        watch.log = Path(run["log_path"]) if run.get("log_path") else folder / "output.log"
        watch.wandb = [folder / paths.RUN_WANDB_DIR / "wandb"]
        if run.get("workdir"):
            watch.wandb.append(Path(run["workdir"]) / "wandb")
        watch.started_at = float(run["started_at"] or time.time())
        watch.devices = [int(d) for d in (run.get("devices") or []) if isinstance(d, int)]
        stalled = run.get("stalled_at")
        if stalled is not None and stalled < watch.started_at - 1.0:
            # Left from an attempt before this one (an agent lost before it cleared it).
            self._table().clear_stalled(watch.run_id, None, self._owner(run))
            stalled = None
        watch.stalled = stalled
        return True

    def _last_output(self, watch: _Watch, wall: float, stall_after: float, followed: Any) -> float:
        """When the run last showed life: its log written, its start, a W&B record written,
        a GPU busy, or its engine still holding it back. Looks further only while the
        cheap signs say it is silent."""
        last = max(_mtime(watch.log), watch.started_at, watch.gpu_busy_at or 0.0,
                   watch.engine_wait_at or 0.0)  # fmt: skip
        silent = wall - last
        sample_after = min(stall_after / GPU_SAMPLES, GPU_EVERY_MAX_S)
        if watch.devices and (silent >= sample_after or watch.stalled is not None):
            use = self.gpu_use(watch.devices)
            if use is not None and use >= GPU_BUSY_PERCENT:
                watch.gpu_busy_at = wall
                return wall
        if silent < stall_after and watch.stalled is None:
            return last
        last = max(last, _wandb_mtime(watch.wandb))
        from launchctl.runners.base import engine_state

        with contextlib.suppress(Exception):  # a cluster run its engine has not started
            if engine_state(followed.handle) is not None:
                watch.engine_wait_at = wall
                return wall
        return last

    def _mark(
        self, watch: _Watch, queue: Row | None, last: float, silent: float, stop_it: bool
    ) -> None:
        from launchctl.hooks import owed_for_stall, stall_facts

        run = self.store.runs.find(watch.run_id)
        if run is None or run["state"] != "running":
            return
        if run.get("stalled_at") is not None:  # marked already (by an agent before this one)
            watch.stalled = run["stalled_at"]
            return
        owner = self._owner(run)
        log = str(watch.log) if watch.log is not None else ""
        facts = stall_facts(run, queue, log, last, silent)
        owed = owed_for_stall(facts, queue, self.hooks or [], owner) if owner else []
        note = f"stalled: no output for {said(silent)}"
        if self._table().mark_stalled(watch.run_id, last, note, owed, owner):
            watch.stalled = last
            then = " (on_stall: stop: stopping it)" if stop_it else ""
            self.say(f"run {watch.run_id} stalled: no output for {said(silent)}{then}")

    def _clear(self, watch: _Watch, note: str | None) -> None:
        self._table().clear_stalled(watch.run_id, note, self.agent_id)
        watch.stalled = None

    def _forget(self, watch: _Watch) -> None:
        """A run no longer followed (it ended): its mark goes with it."""
        if watch.stalled is not None:
            with contextlib.suppress(LaunchctlError):
                self._table().clear_stalled(watch.run_id, None, self.agent_id)

    # -- what it reads --------------------------------------------------------------------------
    def _queue(self, queue_id: int | None) -> Row | None:
        """A queue's row, read at most every ``CONFIG_TTL_S``."""
        if queue_id is None:
            return None
        now = time.monotonic()
        cached = self._queues.get(queue_id)
        if cached is not None and now - cached[0] < CONFIG_TTL_S:
            return cached[1]
        queue = self.store.queues.by_id(queue_id)
        self._queues[queue_id] = (now, queue)
        return queue

    def _table(self) -> Any:
        from launchctl.store.hooks import HookTable

        return HookTable(self.store.db)

    def _owner(self, run: Row) -> str | None:
        return self.agent_id or run.get("agent_id")


def _mtime(path: Path | None) -> float:
    """When ``path`` was last written (never through a link); 0 when it is not there."""
    if path is None:
        return 0.0
    try:
        return os.stat(path, follow_symlinks=False).st_mtime
    except OSError:
        return 0.0


def _wandb_mtime(folders: list[Path]) -> float:
    """The newest write to a W&B transaction log (``run-*/run-ID.wandb``, ``offline-run-*``)
    in ``folders``; links (a job may leave any) are never followed. 0 when there is none."""
    newest = 0.0
    for folder in folders:
        try:
            if not stat.S_ISDIR(os.stat(folder, follow_symlinks=False).st_mode):
                continue
            with os.scandir(folder) as entries:
                names = sorted(
                    e.name
                    for e in entries
                    if e.name.startswith(("run-", "offline-run-"))
                    and e.is_dir(follow_symlinks=False)
                )
        except OSError:
            continue
        for name in names[-WANDB_FOLDERS:]:
            run_id = name.rsplit("-", 1)[-1]
            newest = max(newest, _mtime(folder / name / f"run-{run_id}.wandb"))
    return newest
