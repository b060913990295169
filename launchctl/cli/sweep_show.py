"""`launchctl sweep show`: a sweep's trials, best first, and a plot of them (issue 15)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from launchctl.cli.common import JSON_OPTION, open_store
from launchctl.cli.output import clean, emit_json, err, table

MAX_PARAM_COLUMNS = 6  # more parameters than this: the rest are in --json and the plot


def show(
    sweep_id: str = typer.Argument(..., help="Sweep id (a unique prefix is enough)."),
    plot: Path | None = typer.Option(
        None,
        "--plot",
        metavar="FILE.png",
        help="Also draw the metric against each parameter into this PNG file.",
        show_default=False,
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show a sweep's trials: parameters, state and metric, best first.

    Trials with a value come first, best first for the sweep's goal; the best is
    marked with *. Trials still going or failed follow in the order they were
    proposed. --plot FILE.png draws the metric against each parameter (needs
    matplotlib: pip install 'launchctl[plot]').

    \b
    Examples:
      launchctl sweep show 1a2b3c4d
      launchctl sweep show 1a2b3c4d --plot sweep.png
      launchctl sweep show 1a2b3c4d --json
    """
    from launchctl.sweeps import report

    if plot is not None and plot.suffix.lower() != ".png":
        from launchctl.errors import UsageError

        raise UsageError(f"--plot writes a PNG: give a file name ending in .png, not {plot}")
    built = report.load(open_store(), sweep_id)
    if plot is not None:
        written = report.plot(built, plot)
        err(f"plot written to {written}")
    if as_json:
        emit_json(report.to_json(built))
        return
    _print(built)


def _print(built: Any) -> None:
    from launchctl.sweeps import report

    sweep = built.sweep
    names = built.param_names[:MAX_PARAM_COLUMNS]
    metric = built.metric or "metric"
    rows = []
    for trial in built.trials:
        value = trial.get("metric") if report.trial_state(trial) != "failed" else None
        rows.append(
            [
                "*" if trial["best"] else "",
                trial["seq"],
                trial.get("run_id"),
                report.trial_state(trial),
                *(_cell(trial["params_flat"].get(n, "-")) for n in names),
                "-" if value is None else f"{value:.6g}",
            ]
        )
    goal = f" ({'max' if built.goal == 'maximize' else 'min'})" if built.metric else ""
    print(
        f"sweep {sweep['id']}  {sweep.get('state')}  {sweep.get('method')}"
        f"  queue {sweep.get('queue_name')}  metric {built.metric or '-'}{goal}"
        f"  {len(built.trials)} trials"
    )
    if not rows:
        print("no trials yet")
        return
    table(rows, ["", "trial", "run", "state", *names, metric])
    hidden = len(built.param_names) - len(names)
    if hidden > 0:
        print(f"({hidden} more parameters: --json shows them)")
    if built.best is not None:
        best = built.best
        print(
            f"best: trial {best['seq']} (run {best.get('run_id')}): {metric} {best['metric']:.6g}"
        )
    failed = [t for t in built.trials if report.why_failed(t)]
    for trial in failed[:5]:
        print(clean(f"trial {trial['seq']} failed: {report.why_failed(trial)}"))
    if len(failed) > 5:
        print(f"... and {len(failed) - 5} more failed trials (--json has each one's reason)")
    early = [t for t in built.trials if report.why_stopped(t)]
    for trial in early[:5]:
        print(clean(f"trial {trial['seq']} {report.why_stopped(trial)}"))
    if len(early) > 5:
        print(f"... and {len(early) - 5} more stopped early (--json has each one's step)")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
