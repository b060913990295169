"""What ``launchctl sweep show`` says about a sweep: its trials with their parameters, their
run's state and their metric, best first, and a plot of the metric against each parameter.

Order: the trials with a value, best first for the sweep's goal (smallest first when it
minimizes, W&B's default; largest first when it maximizes; ties in proposal order), then
the others (running, waiting, failed) in proposal order. The best trial is the first one.
A sweep with no metric (W&B allows one for grid and random search) lists its trials in
proposal order and names no best.

The plot is one panel per parameter, the metric against the parameter's value (numbers on
a linear axis, a log axis for a parameter W&B samples log-uniformly, other values as
categories), the best trial marked. It is drawn with matplotlib (the ``plot`` extra:
``pip install 'launchctl[plot]'``), imported only here, with its file-only Agg backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launchctl.errors import LaunchctlError

__all__ = ["PlotUnavailable", "SweepReport", "build", "load", "plot", "to_json"]

NO_MATPLOTLIB = (
    "drawing the plot needs matplotlib, which is not installed for launchctl's Python:"
    " pip install 'launchctl[plot]' (or pip install matplotlib)"
)
LOG_DISTRIBUTIONS = frozenset({"log_uniform", "log_uniform_values", "q_log_uniform",
                               "q_log_uniform_values", "inv_log_uniform",
                               "inv_log_uniform_values"})  # fmt: skip


class PlotUnavailable(LaunchctlError):
    """The plot cannot be drawn here (matplotlib is missing)."""


@dataclass
class SweepReport:
    """A sweep and its trials, in the order ``show`` prints them."""

    sweep: dict[str, Any]
    trials: list[dict[str, Any]]  # each with "params_flat" and "best" added
    param_names: list[str]  # dotted names, in the order the config gives them
    best: dict[str, Any] | None

    @property
    def metric(self) -> str | None:
        name = self.sweep.get("metric_name")
        return str(name) if name else None

    @property
    def goal(self) -> str:
        return "maximize" if self.sweep.get("metric_goal") == "maximize" else "minimize"


def load(store: Any, sweep_id: str) -> SweepReport:
    """The report of the sweep ``sweep_id`` (an id or a unique prefix)."""
    from launchctl.sweeps import manage, scheduler

    sweep = manage.get(store, sweep_id)
    return build(sweep, scheduler.trials(store, str(sweep["id"])))


def build(sweep: dict[str, Any], rows: list[dict[str, Any]]) -> SweepReport:
    """Order ``rows`` (the sweep's trials) for the sweep's goal and mark the best."""
    trials = []
    for row in rows:
        trial = dict(row)
        trial["params_flat"] = flatten(row.get("params") or {})
        trial["best"] = False
        trials.append(trial)
    has_metric = bool(sweep.get("metric_name"))
    scored = [t for t in trials if has_metric and _value(t) is not None]
    rest = [t for t in trials if not (has_metric and _value(t) is not None)]
    sign = -1.0 if sweep.get("metric_goal") == "maximize" else 1.0
    scored.sort(key=lambda t: (sign * float(t["metric"]), t["seq"]))
    rest.sort(key=lambda t: t["seq"])
    best = scored[0] if scored else None
    if best is not None:
        best["best"] = True
    return SweepReport(sweep, scored + rest, _param_names(sweep, trials), best)


def _value(trial: dict[str, Any]) -> float | None:
    value = trial.get("metric")
    if str(trial.get("outcome") or "").startswith("failed"):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested parameters (W&B's nested ``parameters``) as dotted names."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _config_params(config: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """The config's parameters by dotted name, each with its spec."""
    out: dict[str, dict[str, Any]] = {}
    for key, spec in (config.get("parameters") or {}).items():
        if not isinstance(spec, dict):
            continue
        if isinstance(spec.get("parameters"), dict):
            out.update(_config_params(spec, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = spec
    return out


def _param_names(sweep: dict[str, Any], trials: list[dict[str, Any]]) -> list[str]:
    config = sweep.get("config") if isinstance(sweep.get("config"), dict) else {}
    names = list(_config_params(config or {}))
    for trial in trials:
        names += [n for n in trial["params_flat"] if n not in names]
    return names


def trial_state(trial: dict[str, Any]) -> str:
    """A trial's state in one word: its run's state, or ``failed`` for a run that ended
    without a usable metric (``outcome`` says why)."""
    outcome = str(trial.get("outcome") or "")
    if outcome.startswith("failed"):
        return "failed"
    if outcome.startswith(EARLY):
        return EARLY
    return str(trial.get("run_state") or "deleted")


EARLY = "early-terminated"  # a trial hyperband stopped (launchctl.sweeps.early.OUTCOME)


def why_stopped(trial: dict[str, Any]) -> str | None:
    """Why hyperband stopped the trial early (``stopped early by hyperband at step N...``)."""
    outcome = str(trial.get("outcome") or "")
    if outcome.startswith(EARLY):
        return outcome.partition(":")[2].strip() or None
    return None


def why_failed(trial: dict[str, Any]) -> str | None:
    outcome = str(trial.get("outcome") or "")
    if outcome.startswith("failed"):
        return outcome.partition(":")[2].strip() or None
    return None


def to_json(report: SweepReport) -> dict[str, Any]:
    """``sweep show --json``: the sweep's summary, its trials in order, the best one."""
    sweep = report.sweep
    return {
        "id": sweep["id"],
        "state": sweep.get("state"),
        "method": sweep.get("method"),
        "queue": sweep.get("queue_name"),
        "metric": {"name": report.metric, "goal": report.goal} if report.metric else None,
        "best": _trial_json(report.best) if report.best else None,
        "trials": [_trial_json(t) for t in report.trials],
    }


def _trial_json(trial: dict[str, Any]) -> dict[str, Any]:
    return {
        "seq": trial["seq"],
        "run_id": trial.get("run_id"),
        "run_name": trial.get("run_name"),
        "state": trial_state(trial),
        "run_state": trial.get("run_state"),
        "params": trial.get("params") or {},
        "metric": _value(trial),
        "metric_source": trial.get("metric_source"),
        "why": why_failed(trial) or why_stopped(trial),
        "best": bool(trial.get("best")),
    }


def plot(report: SweepReport, path: Path) -> Path:
    """Draw the metric against each parameter into the PNG ``path``; the path written."""
    if not report.metric:
        raise LaunchctlError(f"sweep {report.sweep['id']} has no metric: nothing to plot")
    scored = [t for t in report.trials if _value(t) is not None]
    if not scored:
        raise LaunchctlError(
            f"sweep {report.sweep['id']} has no trial with a value of {report.metric} yet:"
            " nothing to plot"
        )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailable(NO_MATPLOTLIB) from exc
    specs = _config_params(report.sweep.get("config") or {})
    names = [n for n in report.param_names if any(n in t["params_flat"] for t in scored)]
    names = names or ["(trial)"]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    try:
        for index, name in enumerate(names):
            ax = axes[index // cols][index % cols]
            _panel(ax, name, scored, report, specs.get(name) or {})
        for index in range(len(names), rows * cols):
            axes[index // cols][index % cols].set_visible(False)
        goal = "max" if report.goal == "maximize" else "min"
        fig.suptitle(
            f"sweep {report.sweep['id']}: {report.metric} ({goal}),"
            f" {len(scored)} of {len(report.trials)} trials scored"
        )
        fig.tight_layout()
        try:
            fig.savefig(path, format="png", dpi=100)
        except OSError as exc:
            raise LaunchctlError(f"cannot write the plot to {path}: {exc.strerror or exc}") from exc
    finally:
        plt.close(fig)
    return path


def _panel(
    ax: Any, name: str, scored: list[dict[str, Any]], report: SweepReport, spec: dict[str, Any]
) -> None:
    if name == "(trial)":
        xs: list[Any] = [t["seq"] for t in scored]
    else:
        xs = [t["params_flat"].get(name) for t in scored]
    ys = [_value(t) for t in scored]
    numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs)
    if numeric:
        positions: list[Any] = xs
        if spec.get("distribution") in LOG_DISTRIBUTIONS and all(x > 0 for x in xs):
            ax.set_xscale("log")
    else:
        labels = sorted({_label(x) for x in xs})
        positions = [labels.index(_label(x)) for x in xs]
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=30, ha="right")
    ax.scatter(positions, ys, s=28, alpha=0.8, color="tab:blue")
    best = [i for i, t in enumerate(scored) if t.get("best")]
    if best:
        i = best[0]
        ax.scatter([positions[i]], [ys[i]], s=160, marker="*", color="tab:red", label="best")
        ax.legend(loc="best", fontsize=8)
    ax.set_xlabel(name)
    ax.set_ylabel(report.metric)
    ax.grid(True, alpha=0.3)


def _label(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 24 else text[:23] + "…"
