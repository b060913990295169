"""Early termination of a sweep's trials: W&B's hyperband (issue 15).

A sweep whose config has ``early_terminate: {type: hyperband, ...}`` has its running
trials looked at on each scheduler pass. A trial's history is the metric's values in its
run's metrics file, line after line (one line a step, as W&B's history rows; see
``results.history``). W&B's own sweep engine (the ``sweeps`` package,
``hyperband_stopping.hyperband_stop_runs``) gets every trial's history, the running
trials marked running, and says which to stop: the same rule, bands and thresholds as a
W&B sweep's (a running trial whose best value so far, or with ``strict`` its value at the
band, is worse than the band's top ``1/eta`` among every trial that reached that band).

Stopping one is two writes, in this order, so a scheduler killed in between loses
nothing and never stops a trial twice:

1. a note on the trial's run, ``stopped early by hyperband at step N: METRIC X (...)``:
   the decision, kept in the run's events; a trial with that note is never asked about
   again;
2. the cancel of the run (``runs cancel``'s path: its agent stops it, with the queue's
   grace), done at once and, should the scheduler die first, by the next pass.

Once its run has ended, the trial is scored ``early-terminated: <the note>`` with its
metric (W&B counts early-terminated runs, by their value, in its search), not failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from launchctl.states import TERMINAL, State
from launchctl.store import Row, Store

PREFIX = "stopped early by hyperband"
OUTCOME = "early-terminated"

# Histories of ended trials (they no longer change): (store root, run id) -> values.
_ENDED_HISTORY: dict[tuple[str, str], list[float]] = {}
_ENDED_KEEP = 20_000


@dataclass(frozen=True)
class Stop:
    """A trial the engine says to stop: at ``step`` (1-based), its last value ``value``,
    the band it was judged at and that band's threshold (in the metric's own sign)."""

    key: Any
    step: int
    value: float
    band: int
    threshold: float


def available() -> bool:
    """Whether W&B's sweep engine (the ``sweeps`` package) can be imported."""
    import importlib.util

    return importlib.util.find_spec("sweeps") is not None


def decide(
    config: dict[str, Any],
    trials: list[tuple[Any, list[float], bool]],
) -> list[Stop]:
    """Which trials to stop: ``trials`` are (key, history, running) for every trial of
    the sweep; ``config`` is its sweep config (``metric``, ``early_terminate``). Asks
    W&B's engine; raises ImportError when it is not installed."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its pydantic models' warnings on import
        from sweeps import RunState, SweepRun
        from sweeps.hyperband_stopping import hyperband_stop_runs

    metric = config["metric"]["name"]
    maximize = config["metric"].get("goal") == "maximize"
    runs = []
    for i, (_key, history, running) in enumerate(trials):
        runs.append(
            SweepRun(
                name=str(i),
                state=RunState.running if running else RunState.finished,
                history=[{metric: v} for v in history],
            )
        )
    et = dict(config["early_terminate"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stopped = hyperband_stop_runs(runs, {"metric": config["metric"], "early_terminate": et})
    out = []
    for run in stopped:
        key, history, _running = trials[int(run.name)]
        info = run.early_terminate_info or {}
        band, threshold = 0, float("nan")
        for b, t in zip(info.get("bands") or [], info.get("thresholds") or [], strict=False):
            if b <= len(history):
                band, threshold = int(b), float(t)
        if maximize:
            threshold = -threshold
        out.append(Stop(key, len(history), history[-1], band, threshold))
    return out


def reason(stop: Stop, metric: str) -> str:
    return (
        f"{PREFIX} at step {stop.step}: {metric} {stop.value:g}"
        f" (band {stop.band}: threshold {stop.threshold:g})"
    )


def decided(store: Store, run_id: str) -> str | None:
    """The hyperband note on a trial's run, if it was stopped early (survives restarts)."""
    for event in reversed(store.runs.events(run_id)):
        message = str(event.get("message") or "")
        if message.startswith(PREFIX):
            return message
    return None


def _history(store: Store, run: Row, metric: str) -> list[float]:
    from launchctl.sweeps import results

    if run["state"] not in TERMINAL:
        return results.history(store, run, metric)
    key = (str(store.root), str(run["id"]))
    if key not in _ENDED_HISTORY:
        if len(_ENDED_HISTORY) >= _ENDED_KEEP:
            _ENDED_HISTORY.clear()
        _ENDED_HISTORY[key] = results.history(store, run, metric)
    return _ENDED_HISTORY[key]


def apply(store: Store, sweep: Row, trials: list[Row]) -> list[str]:
    """One pass of early termination over ``sweep``'s ``trials`` (``sweep_trials.all``):
    finishes the stops decided before (a note but no cancel yet), asks the engine about
    the running trials not yet decided, and stops those it names. Returns the run ids
    asked to stop in this pass."""
    from launchctl.errors import StateConflict

    config = sweep["config"]
    if "early_terminate" not in config or not sweep.get("metric_name"):
        return []
    metric = str(sweep["metric_name"])
    asked: list[str] = []
    candidates: list[tuple[Any, list[float], bool]] = []
    for trial in trials:
        run_id = trial.get("run_id")
        if run_id is None or trial.get("run_state") is None:
            continue
        run = store.runs.find(run_id)
        if run is None:
            continue
        running = run["state"] == State.RUNNING
        if running and decided(store, run_id) is not None:
            if not run["cancel_requested"]:  # decided, then the scheduler died: finish it
                try:
                    store.runs.request_cancel(run_id, by="hyperband")
                    asked.append(run_id)
                except StateConflict:
                    pass
            continue
        if run["state"] not in TERMINAL and not running:
            continue  # queued, starting: no history yet, and not judged
        history = _history(store, run, metric)
        candidates.append((run, history, running and not run["cancel_requested"]))
    if not any(running for _r, _h, running in candidates):
        return asked
    for stop in decide(config, candidates):
        run = stop.key
        store.runs.note(run["id"], reason(stop, metric))
        try:
            store.runs.request_cancel(run["id"], by="hyperband")
        except StateConflict:  # it ended meanwhile: scored early-terminated all the same
            continue
        asked.append(str(run["id"]))
    return asked
