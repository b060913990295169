"""The sweep scheduler: keeps ``num_workers`` of a sweep's trials going (issue 15).

One ``tick`` does everything a pass needs, from what the store knows and nothing else
(so a scheduler killed at any point is replaced by the next one without loss):

1. take (or keep) the sweep's lease: one scheduler per sweep; a killed one's sweep is
   taken up when its lease runs out, or at once by an agent that sees its process gone;
2. score every trial whose run has ended (``results.score``): a run that did not finish,
   or reported no usable metric, is a failed trial;
3. while the sweep runs, launch trials until ``num_workers`` of them are queued or
   running, never more, and never past ``run_cap``: each is a run of the sweep's queue,
   checked by the same code as ``launchctl launch``, written with its trial in one
   transaction;
4. mark the sweep finished once the search is exhausted (a grid walked through) or
   ``run_cap`` reached, and every trial is scored.

It runs inside the agent serving the sweep's queue (``serve``, once per agent pass) and
as ``launchctl sweep run ID`` in the foreground (``run_foreground``).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from launchctl import identity
from launchctl.errors import ConfigError, LaunchctlError, NotFound, UsageError
from launchctl.states import TERMINAL, State
from launchctl.store import Row, Store
from launchctl.store.sweep_trials import SweepTrialTable

# How long a scheduler's hold on a sweep lasts without renewal (each pass renews it).
LEASE_S = float(os.environ.get("LAUNCHCTL_SWEEP_LEASE_S", "30"))


@dataclass
class TickResult:
    """What one pass did."""

    held: bool = True
    launched: list[str] = field(default_factory=list)  # run ids
    scored: int = 0
    state: str = "running"
    done: bool = False  # the sweep needs no scheduler any more
    stopped_early: list[str] = field(default_factory=list)  # run ids (hyperband)


def trials(store: Store, sweep_id: str) -> list[Row]:
    """The sweep's trials in proposal order (for ``sweep show``): seq, run_id, run_name,
    params (the run config), metric, metric_source, outcome (``ok``, ``failed: why``, or
    None while its run goes), created_at, scored_at, run_state (None: run deleted)."""
    return SweepTrialTable(store.db).all(sweep_id)


def _history(rows: list[Row]) -> list[Any]:
    from launchctl.sweeps.search import Past

    out = []
    for row in rows:
        done = row["outcome"] is not None or row["run_state"] is None
        if row["run_state"] in TERMINAL:
            done = True
        counted = row["outcome"] == "ok" or str(row["outcome"] or "").startswith("early-")
        value = row["metric"] if counted else None
        out.append(Past(params=row["params"], value=value, done=done))
    return out


def _seed(sweep: Row) -> int | None:
    settings = (sweep["scheduler"] or {}).get("settings") or {}
    seed = settings.get("seed") if isinstance(settings, dict) else None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def _sampler_spec(sweep: Row) -> dict[str, Any] | None:
    """``scheduler.settings.sampler`` (checked at launch-sweep), for random and bayes."""
    settings = (sweep["scheduler"] or {}).get("settings") or {}
    spec = settings.get("sampler") if isinstance(settings, dict) else None
    return spec if isinstance(spec, dict) and sweep["method"] != "grid" else None


# -- scoring ----------------------------------------------------------------------------------
def _score(store: Store, table: SweepTrialTable, sweep: Row) -> int:
    from launchctl.sweeps import early, results

    scored = 0
    for trial in table.unscored(sweep["id"]):
        if trial["run_id"] is None or trial["run_state"] is None:
            value, source, outcome = None, "none", "failed: its run was deleted"
        else:
            run = store.runs.get(trial["run_id"])
            got = results.score(store, run, sweep["metric_name"] or "", sweep["metric_goal"])
            value, source = got.value, got.source
            stopped_early = None
            if run["state"] == State.STOPPED and "early_terminate" in sweep["config"]:
                stopped_early = early.decided(store, run["id"])
            if stopped_early is not None and value is not None:
                # W&B counts an early-terminated run, by its value: not a failure.
                outcome = f"{early.OUTCOME}: {stopped_early}"
            elif run["state"] != State.FINISHED:
                why = run["reason"] or f"exit code {run['exit_code']}"
                value, outcome = None, f"failed: its run {run['state']} ({why})"
            elif value is None:
                outcome = f"failed: {got.why or 'the run reported no metric'}"
            else:
                outcome = "ok"
        if table.score(sweep["id"], trial["seq"], metric=value, source=source, outcome=outcome):
            scored += 1
    return scored


def _stop_early(store: Store, sweep: Row, rows: list[Row]) -> list[str]:
    """Hyperband (``early_terminate``): stop the running trials W&B's engine says to."""
    if "early_terminate" not in sweep["config"] or sweep["state"] == "cancelled":
        return []
    from launchctl.sweeps import early

    try:
        return early.apply(store, sweep, rows)
    except ImportError as exc:  # launch-sweep refuses this; a package removed since
        raise LaunchctlError(
            f"early_terminate needs W&B's sweep engine ({exc}): pip install 'launchctl[sweeps]'"
        ) from exc


# -- launching --------------------------------------------------------------------------------
def _build_run(store: Store, sweep: Row, params: dict[str, Any]) -> dict[str, Any]:
    """The trial's run, checked as ``launchctl launch`` checks one (queue, template values,
    guardrails, the author's role, GPUs), in the sweep author's name; not yet written."""
    from launchctl import launch, teams
    from launchctl.sweeps.manage import trial_spec

    spec = trial_spec(sweep, params)
    spec["sweep_id"] = sweep["id"]  # WANDB_SWEEP_ID in its environment (runenv)
    queue = store.queues.get(sweep["queue_name"])
    teams.check_launch(store, queue, {**spec, "author": sweep["author"]}, user=sweep["author"])
    run = launch.build_run(store, spec, say=lambda _line: None)
    run["spec"]["author"] = sweep["author"]
    return run


# The searcher of each sweep this process schedules (its sampler's random state moves on
# between proposals); rebuilt from the store's trials when this process starts on a sweep.
_SEARCHERS: dict[tuple[str, str], Any] = {}


def _searcher(sweep: Row, params: list[Any], agent_id: str, start: int) -> Any:
    from launchctl.sweeps.search import Searcher

    key = (agent_id, sweep["id"])
    if key not in _SEARCHERS:
        _SEARCHERS[key] = Searcher(
            sweep["method"], params, goal=sweep["metric_goal"], seed=_seed(sweep), start=start,
            sampler=_sampler_spec(sweep),
        )  # fmt: skip
    return _SEARCHERS[key]


def _refusals() -> tuple[type[LaunchctlError], ...]:
    from launchctl.teams import PermissionDenied

    return (UsageError, ConfigError, NotFound, PermissionDenied)


# What fails a sweep when its next trial's launch is refused: its config, its queue's
# rules or its author's role. A store that cannot be written now (busy, a full disk) is
# not among them: the pass fails, is said once, and the next one tries again.
REFUSALS = _refusals()


# -- one pass ---------------------------------------------------------------------------------
def tick(
    store: Store,
    sweep_id: str,
    agent_id: str,
    *,
    launch_new: bool = True,
    lease_s: float | None = None,
    dead: Iterable[str] = (),
) -> TickResult:
    """One scheduling pass over one sweep (see the module's docstring)."""
    from launchctl.sweeps import search

    table = SweepTrialTable(store.db)
    lease = LEASE_S if lease_s is None else lease_s
    if not table.take_lease(sweep_id, agent_id, lease, dead=dead):
        row = table.sweep(sweep_id)
        if row is None:
            raise NotFound(f"sweep '{sweep_id}' does not exist")
        return TickResult(held=False, state=row["state"], done=row["state"] not in ACTIVE_STATES)
    sweep = table.sweep(sweep_id)
    if sweep is None:
        raise NotFound(f"sweep '{sweep_id}' does not exist")
    result = TickResult(state=sweep["state"])
    result.scored = _score(store, table, sweep)
    rows = table.all(sweep_id)
    result.stopped_early = _stop_early(store, sweep, rows)
    flying = table.in_flight(sweep_id)
    cap = sweep["run_cap"]
    method = sweep["method"]
    try:
        params = search.check(method, sweep["config"].get("parameters"))
    except LaunchctlError as exc:
        table.fail(sweep_id, agent_id, f"its config cannot be searched: {exc}")
        result.state, result.done = "failed", True
        return result
    exhausted = False
    while sweep["state"] == "running" and launch_new and flying < sweep["num_workers"]:
        if cap is not None and len(rows) >= cap:
            break
        proposal = _searcher(sweep, params, agent_id, len(rows)).propose(_history(rows))
        if proposal is None:
            exhausted = True
            break
        seq = table.next_seq(sweep_id)
        try:
            run = _build_run(store, sweep, proposal)
        except REFUSALS as exc:  # the trial can never launch: say why on the sweep
            table.fail(sweep_id, agent_id, f"trial {seq} cannot be launched: {exc}")
            _SEARCHERS.pop((agent_id, sweep_id), None)
            result.state, result.done = "failed", True
            return result
        if not table.add(sweep_id, seq, proposal, run, agent_id):
            break  # the lease was lost, or the sweep paused, meanwhile: the next pass sees
        result.launched.append(run["id"])
        rows = table.all(sweep_id)
        flying += 1
    if sweep["state"] == "running" and not exhausted and method == "grid":
        exhausted = len(rows) >= search.grid_size(params) and (
            search.propose(method, params, _history(rows)) is None
        )
    capped = cap is not None and len(rows) >= cap
    settled = flying == 0 and all(r["outcome"] is not None for r in table.all(sweep_id))
    if sweep["state"] == "running" and (exhausted or capped) and settled:
        why = f"run_cap {cap} reached" if capped else "the search is exhausted"
        if table.finish(sweep_id, agent_id, why):
            result.state, result.done = "finished", True
    elif sweep["state"] != "running" and settled:
        # Paused or stopped with every trial scored: nothing to do until it is resumed,
        # and then whichever scheduler comes first takes it at once.
        table.release(sweep_id, agent_id)
        result.done = sweep["state"] == "stopped"  # no new trials, the last ones scored
    if result.state in ("finished", "failed"):
        _SEARCHERS.pop((agent_id, sweep_id), None)
    return result


ACTIVE_STATES = frozenset({"running", "paused", "stopped"})


def serve(
    store: Store,
    queue_names: Iterable[str],
    agent_id: str,
    *,
    launch_new: bool = True,
    say: Callable[[str], None] = lambda _line: None,
    said: dict[str, str] | None = None,
) -> list[str]:
    """The agent's hook: one pass over every sweep of the queues it serves that needs a
    scheduler and that it holds or may take. Returns the run ids launched.

    A sweep's trouble is said once (``said`` remembers it per sweep), never raised: the
    agent goes on serving its queue."""
    from launchctl.agent.recovery import dead_agents

    table = SweepTrialTable(store.db)
    now = time.time()
    launched: list[str] = []
    dead: list[str] | None = None
    for row in table.needing_work(queue_names):
        holder, until = row["scheduler_agent"], row["scheduler_lease"]
        gone: list[str] = []
        if holder and holder != agent_id and until is not None and until >= now:
            if dead is None:
                dead = [a["id"] for a in dead_agents(store, socket.gethostname(), agent_id)]
            if holder not in dead:
                continue  # another live scheduler has it
            gone = [holder]
        try:
            result = tick(store, row["id"], agent_id, launch_new=launch_new, dead=gone)
        except Exception as exc:  # never let one sweep stop the agent
            text = f"sweep {row['id']}: {exc}"
            if said is not None and said.get(row["id"]) != text:
                said[row["id"]] = text
                say(f"cannot schedule {text}")
            continue
        launched.extend(result.launched)
        if result.launched:
            say(f"sweep {row['id']}: queued {len(result.launched)} trial runs")
        if result.state in ("finished", "failed"):
            say(f"sweep {row['id']} {result.state}")
    return launched


def release(store: Store, agent_id: str) -> None:
    """Give back every sweep this scheduler holds (a clean stop)."""
    SweepTrialTable(store.db).release_all(agent_id)


def scheduler_id() -> str:
    return f"{socket.gethostname()}-sweep-{os.getpid()}-{os.urandom(2).hex()}"


def run_foreground(
    store: Store,
    sweep_id: str,
    *,
    poll_s: float = 1.0,
    say: Callable[[str], None] = lambda _line: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> str:
    """``launchctl sweep run ID``: schedule one sweep until it needs no scheduler (finished,
    failed, cancelled, or paused/stopped with nothing left to score). Its trials are run
    by an agent serving the sweep's queue. Returns the sweep's last state."""
    from launchctl.agent.wake import Waker

    me = scheduler_id()
    table = SweepTrialTable(store.db)
    sweep = table.sweep(sweep_id)
    if sweep is None:
        raise NotFound(f"sweep '{sweep_id}' does not exist (see `launchctl sweep list`)")
    from launchctl import teams

    teams.require_member(store, sweep["entity"], action=f"schedule sweep {sweep_id} of")
    _ = identity.current_user()
    waker = Waker(store.db.path, fallback_s=poll_s)
    waker.start()
    waiting_said = False
    try:
        while not should_stop():
            result = tick(store, sweep_id, me)
            if not result.held and not result.done and not waiting_said:
                say(f"sweep {sweep_id} is scheduled by another scheduler; waiting for its lease")
                waiting_said = True
            for run_id in result.launched:
                say(f"queued trial run {run_id}")
            if result.done:
                return result.state
            waker.wait(poll_s)
    finally:
        waker.close()
        table.release(sweep_id, me)
    row = table.sweep(sweep_id)
    return str(row["state"]) if row else "unknown"
