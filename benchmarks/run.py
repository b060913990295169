"""Benchmarks: launchctl side by side with a baseline, in the same run, on the same machine.

    python benchmarks/run.py            full run (a few minutes)
    python benchmarks/run.py --quick    smoke run: fewer repetitions, 100 runs instead of 500
    python benchmarks/run.py --only sync   one benchmark by name

Six benchmarks, each against a baseline measured in the same run (interleaved where it
makes sense), reported as medians over repetitions, because the machine may be small
and noisy:

1. startup: ``launchctl --help`` and ``launchctl runs list`` against ``python -c pass``;
2. dispatch latency: ``launchctl launch -q`` returning -> the run's process starting, with
   an idle agent (``--poll 30``, so the file-watch wake-up is measured), against a raw
   ``subprocess.Popen`` of the same child command;
3. throughput: trivial runs through one agent with max_jobs 2 against task-spooler
   (``tsp -S 2``) on the same work;
4. container latency: a run queued on a ``local-container`` queue -> its container's first
   act, with an idle agent, against a raw ``docker run`` of the same image and command;
5. code job cache hit: ``launchctl launch -q -u`` of unchanged code -> its container's first
   act (the image exists, nothing is built), against a warm-cache ``docker build`` of the same
   Dockerfile and a raw ``docker run`` of the built image;
6. sync: ``launchctl sync`` of 1,000 finished runs (100 with --quick) into a stand-in W&B
   server, against W&B's own ``wandb sync`` of as many offline runs, per run;
7. slurm (``bench_slurm.py``): a run on a ``slurm`` queue -> its batch job's first act,
   against a raw ``sbatch --wrap`` of the same command (needs ``scripts/services.sh slurm``);
8. sweep (``bench_sweep.py``, issue 15): the sweep scheduler's overhead per trial (a trial's
   run ending -> the next trial's run queued, from the event log) against W&B's documented
   sweep scheduler poll interval.
9. ui (``bench_ui.py``, issue 16): the web view with 200 runs (40 running): ``GET /runs``
   and the browser's load event, and a state change in the store -> the ``/events`` client
   and -> the row's state cell in Chromium, against one ``runs list --json`` of the same runs.
12. deps (``bench_deps.py``, issue 18): a dependency's end -> its dependent run's start along
   a chain of ``launch --after-ok`` runs, against a ``tsp -D`` chain of the same script.

4 and 5 need the Docker engine and the base images that ``scripts/services.sh all`` starts;
when it cannot, the table says they were skipped and why.

The table goes to stdout and bench-results/bench.md; every raw number to bench.json.
Every LAUNCHCTL_HOME is a fresh temporary folder; every background process is stopped on
the way out, errors included.

This file is the entry point (``nox -s bench`` runs it). Each benchmark is its own module,
``bench_startup.py``, ``bench_dispatch.py``, ``bench_throughput.py``, ``bench_container.py``,
``bench_cache_hit.py`` and ``bench_sync.py``; ``containers.py`` holds what 4 and 5 share
(the docker client, cleanup, a raw ``docker run`` and a launchctl container run, both
timed); ``harness.py`` the settings, timing, fresh stores and background processes;
``report.py`` the table and the files it is written to.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from bench_bigqueue import bench_bigqueue
from bench_bigstore import bench_bigstore
from bench_cache_hit import bench_cache_hit
from bench_container import bench_container_latency
from bench_deps import bench_deps
from bench_dispatch import bench_dispatch
from bench_slurm import bench_slurm
from bench_startup import bench_startup
from bench_sweep import bench_sweep
from bench_sync import bench_sync
from bench_throughput import bench_throughput
from bench_ui import bench_ui
from containers import engine_problem
from harness import ROOT, Settings
from report import Report, Row, write_results


def bench_containers(settings: Settings, report: Report) -> None:
    """Start the engine, then the two container benchmarks; a skip row when it cannot start."""
    problem = engine_problem()
    if problem is not None:
        why = problem.replace("|", "/")
        report.rows.append(Row(f"containers: skipped ({why})", *["-"] * 6))
        report.notes.append(f"containers: benchmarks 4 and 5 skipped: {why}")
        report.raw["containers"] = {"skipped": problem}
        return
    bench_container_latency(settings, report)
    bench_cache_hit(settings, report)


def parse_args(argv: list[str]) -> tuple[Settings, bool]:
    """Command-line flags into settings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, 100 runs")
    parser.add_argument(
        "--only",
        help="run one benchmark: startup, dispatch, throughput, containers, sync, bigqueue,"
        " bigstore, slurm, sweep, ui, deps",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results", help="results folder")
    args = parser.parse_args(argv)
    if args.quick:
        return Settings(5, 5, 100, 1, 5, 5, args.out, sync_runs=100, only=args.only), True
    return Settings(15, 20, 500, 3, 15, 10, args.out, sync_runs=1000, only=args.only), False


def on_sigterm(_sig: int, _frame: object) -> None:
    """Turn SIGTERM into SystemExit so every cleanup block runs."""
    sys.exit(143)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, print the table, save the results."""
    settings, quick = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    report = Report()
    start = time.perf_counter()
    benches = (bench_startup, bench_dispatch, bench_throughput, bench_containers, bench_sync)
    benches += (bench_bigqueue, bench_bigstore)  # issue 17: 10,000 queued, 100,000 stored
    benches += (bench_slurm, bench_sweep, bench_ui, bench_deps)  # 14, 15, 16; deps: issue 18
    for bench in benches:
        name = bench.__name__.removeprefix("bench_")
        if settings.only and settings.only != name:
            continue
        print(f"running {name} ...", file=sys.stderr, flush=True)
        bench(settings, report)
    text = write_results(report, settings, quick, time.perf_counter() - start)
    print(text)
    print(f"written to {settings.out}/bench.md and bench.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
