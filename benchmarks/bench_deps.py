"""Benchmark 12, dependencies (issue 18): a dependency's end -> its dependent run's start,
along a chain of trivial runs (``launch --after-ok PREV``), against task-spooler's
``tsp -D PREV`` chain measured in the same run.

Both chains run the same shell script, which appends its start time and, last thing before
it exits, its end time (``date +%s.%N``) to a file; the gap of link k is its start minus
link k-1's end, as the jobs themselves saw it (no store or server clock is read). Each
chain hangs off a gate job that waits for a file: the whole chain is queued behind it
(launchctl through the CLI, as a user's script would: ``a=$(launchctl launch -q ...
--quiet)``), with an agent (``-j 2``) or a tsp server (``-S 2``) already running, so a
free slot is always there and the dependency is the only thing a link waits for; then the
gate opens. The two chains alternate, repetition by repetition.

Pueue is not installed here and is not measured. Its daemon's task handler checks for
finished tasks and spawns new ones once per pass of a loop that waits up to 200 ms for
messages (pueue's ``pueue/src/daemon/task_handler/mod.rs``, ``TaskHandler::run``: "we only
check if a new task can be scheduled or if tasks are finished, every 200ms"), so a
``pueue add --after`` task starts on average about 100 ms, and at worst about 200 ms, after
its dependency ends.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench_throughput import tsp_env
from harness import (
    LAUNCHCTL,
    Settings,
    background,
    create_job,
    fresh_home,
    median,
    wait_agent,
    wait_for,
)
from report import Report, Row, met

PUEUE_LOOP_S = 0.2  # pueue's task handler: a pass every 200 ms at most (see above)
STAMP = """\
id="${1:-$LAUNCHCTL_RUN_ID}"
echo "start $id $(date +%s.%N)" >> STAMPS
echo "end $id $(date +%s.%N)" >> STAMPS
"""
GATE = """\
while [ ! -e GATE_FILE ]; do sleep 0.01; done
echo "end ${1:-$LAUNCHCTL_RUN_ID} $(date +%s.%N)" >> STAMPS
"""


def write_scripts(folder: Path, stamps: Path, gate: Path) -> Path:
    """The chain's two scripts (``stamp.sh``, ``gate.sh``) in a fresh code folder."""
    code = folder / "code"
    code.mkdir()
    (code / "stamp.sh").write_text(STAMP.replace("STAMPS", str(stamps)))
    (code / "gate.sh").write_text(
        GATE.replace("STAMPS", str(stamps)).replace("GATE_FILE", str(gate))
    )
    return code


def read_stamps(path: Path) -> dict[tuple[str, str], float]:
    """{(start|end, job id): time} from the lines the jobs wrote."""
    found: dict[tuple[str, str], float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                found[(parts[0], parts[1])] = float(parts[2])
    return found


def chain_gaps(stamps: dict[tuple[str, str], float], ids: list[str]) -> list[float]:
    """Link k's start minus link k-1's end, for k = 1.. (``ids[0]`` is the gate)."""
    return [stamps[("start", ids[k])] - stamps[("end", ids[k - 1])] for k in range(1, len(ids))]


def _cli(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([LAUNCHCTL, *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"launchctl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def launchctl_chain(links: int) -> dict[str, Any]:
    """A gate run, then ``links`` runs each ``--after-ok`` the one before, through one agent."""
    with fresh_home("deps") as (tmp, env):
        stamps, gate = tmp / "stamps", tmp / "gate"
        code = write_scripts(tmp, stamps, gate)
        create_job(env, code, "gate", ["sh", "gate.sh"])
        create_job(env, code, "step", ["sh", "stamp.sh"])
        agent = [LAUNCHCTL, "agent", "-q", "default", "-j", "2"]
        with background(agent, env, tmp / "agent.log"):
            wait_agent(env, "default")
            ids = [_cli(env, "launch", "-q", "default", "-j", "gate", "--quiet")]
            for _ in range(links):
                ids.append(_cli(env, "launch", "-q", "default", "-j", "step", "--quiet",
                                "--after-ok", ids[-1]))  # fmt: skip
            gate.touch()
            wait_for(lambda: ("end", ids[-1]) in read_stamps(stamps), 60.0 + links,
                     "the launchctl chain's last run", step_s=0.01)  # fmt: skip
        found = read_stamps(stamps)
    starts = [r for (what, r) in found if what == "start"]
    if sorted(starts) != sorted(ids[1:]):
        raise RuntimeError(f"expected each of {len(ids) - 1} runs to start once, got {starts}")
    return {"gaps_s": chain_gaps(found, ids)}


def tsp_chain(links: int) -> dict[str, Any]:
    """The same chain on a private task-spooler server (``-S 2``): ``tsp -D PREV``."""
    with tempfile.TemporaryDirectory(prefix="launchctl-bench-tspdeps-",
                                     ignore_cleanup_errors=True) as name:  # fmt: skip
        tmp = Path(name)
        stamps, gate = tmp / "stamps", tmp / "gate"
        code = write_scripts(tmp, stamps, gate)
        env = tsp_env(tmp, links + 10)
        try:
            subprocess.run(["tsp", "-S", "2"], env=env, check=True)  # starts the server

            def add(*args: str) -> str:
                done = subprocess.run(["tsp", *args], env=env, cwd=code, capture_output=True,
                                      text=True, check=True)  # fmt: skip
                return done.stdout.strip()

            ids = ["0"]
            jobs = [add("sh", str(code / "gate.sh"), "0")]
            for k in range(1, links + 1):
                jobs.append(add("-D", jobs[-1], "sh", str(code / "stamp.sh"), str(k)))
                ids.append(str(k))
            gate.touch()
            wait_for(lambda: ("end", ids[-1]) in read_stamps(stamps), 60.0 + links,
                     "the tsp chain's last job", step_s=0.01)  # fmt: skip
            found = read_stamps(stamps)
        finally:
            subprocess.run(["tsp", "-K"], env=env, capture_output=True)
    return {"gaps_s": chain_gaps(found, ids)}


def p90(values: list[float]) -> float:
    """The 90th percentile (nearest rank), or NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, -(-9 * len(ordered) // 10) - 1)]


def ms(value: float) -> str:
    return f"{value * 1000:.0f} ms"


def bench_deps(settings: Settings, report: Report) -> None:
    """Chains of ``--after-ok`` runs against ``tsp -D`` chains, alternating."""
    quick = settings.throughput_runs < 500
    links, reps = (8, 1) if quick else (20, 2)
    have_tsp = shutil.which("tsp") is not None
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(reps):
        ours += launchctl_chain(links)["gaps_s"]
        if have_tsp:
            theirs += tsp_chain(links)["gaps_s"]
    add_deps_rows(report, links, reps, ours, theirs)


def add_deps_rows(
    report: Report, links: int, reps: int, ours: list[float], theirs: list[float]
) -> None:
    """The table row, the note and the raw numbers."""
    mid, tail = median(ours), p90(ours)
    have = bool(theirs)
    report.rows.append(
        Row(
            f"deps: a dependency ends -> its dependent starts (--after-ok, {len(ours)} links)",
            f"median {ms(mid)}, p90 {ms(tail)}",
            f"median {ms(median(theirs))}, p90 {ms(p90(theirs))}" if have else "-",
            "task-spooler `tsp -D PREV` chain" if have else "tsp not installed",
            f"{mid / median(theirs):.1f}x tsp's median" if have and median(theirs) > 0 else "-",
            f"p90 < {ms(PUEUE_LOOP_S)} (pueue's documented loop)",
            met(tail < PUEUE_LOOP_S),
        )
    )
    report.notes.append(
        f"deps: {reps} chain(s) of {links} trivial runs (`sh stamp.sh`: two `date +%s.%N`"
        " lines appended to a file) behind a gate job, each link `launch -q default -j step"
        " --after-ok PREV --quiet`, one agent `-j 2` already running; against the same"
        f" script chained with `tsp -D PREV` on a private `tsp -S 2` server. The gap is a"
        " link's own start time minus its dependency's own end time. launchctl's gap is"
        " the agent noticing the end (the reaper thread), recording it, claiming the"
        " dependent in a new transaction and laying out its working copy; tsp's is its"
        " server starting the next command. Pueue is not installed and not measured: its"
        f" daemon spawns ready tasks once per pass of a loop of at most {ms(PUEUE_LOOP_S)}"
        " (pueue/src/daemon/task_handler/mod.rs, TaskHandler::run)."
    )
    report.raw["deps"] = {"links": links, "reps": reps, "launchctl_gaps_s": ours,
                          "tsp_gaps_s": theirs, "pueue_loop_s": PUEUE_LOOP_S}  # fmt: skip


if __name__ == "__main__":
    from harness import Settings as _Settings

    rep = Report()
    bench_deps(_Settings(5, 5, 100, 1, 5, 5, Path("bench-results")), rep)
    for row in rep.rows:
        print(row)
    print("\n".join(rep.notes))
