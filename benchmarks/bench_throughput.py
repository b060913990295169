"""Benchmark 3, throughput: trivial runs through one agent with max_jobs 2 against
task-spooler (``tsp -S 2``) on the same work."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import (
    LAUNCHCTL,
    Settings,
    background,
    create_job,
    enqueue,
    fresh_home,
    make_code_dir,
    median,
    state_counts,
    wait_exit,
    wait_for,
)
from report import Report, Row, secs


class MachineCPU:
    """CPU the whole machine spent while a benchmark ran, less this process's own: what
    the launcher under test cost (its daemon, clients, agent, spawner and the runs' own
    processes together). ``with MachineCPU() as cpu: ...`` then ``cpu.ms`` (None where
    /proc/stat cannot be read). Counted in clock ticks, summed over every CPU, so it is
    independent of how well the work spread over them."""

    def __init__(self, *, own: bool = False) -> None:
        self.ms: float | None = None
        self.own = own  # count this process's CPU too (it is the launcher under test)
        self._start: tuple[float, float] | None = None

    @staticmethod
    def _busy_s() -> float | None:
        try:
            with open("/proc/stat", encoding="ascii") as fh:
                fields = [int(x) for x in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        # user nice system idle iowait irq softirq steal (guest time is inside user)
        busy = sum(fields[:8]) - fields[3] - fields[4]
        return busy / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_s() -> float:
        t = os.times()
        return t.user + t.system

    def __enter__(self) -> MachineCPU:
        busy = self._busy_s()
        self._start = None if busy is None else (busy, self._own_s())
        return self

    def __exit__(self, *_exc: object) -> None:
        busy = self._busy_s()
        if self._start is None or busy is None:
            return
        mine = 0.0 if self.own else self._own_s() - self._start[1]
        self.ms = max(0.0, busy - self._start[0] - mine) * 1000


def precompile() -> None:
    """Byte-compile launchctl as an install does (pip writes the .pyc files; a checkout with
    PYTHONDONTWRITEBYTECODE set never gets them, and each agent start would compile every
    module again: a tenth of a second of the 500 runs' time)."""
    import launchctl

    package = str(Path(launchctl.__file__).parent)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", package],
        env=env,
        stdout=subprocess.DEVNULL,
        check=True,
    )


def launchctl_throughput(count: int) -> dict[str, Any]:
    """Pre-enqueue ``count`` runs via the API, then time an agent draining them (-j 2)."""
    with fresh_home("throughput") as (tmp, env):
        create_job(env, make_code_dir(tmp), "trivial", ["true"])
        enqueue_s = enqueue(env, "trivial", count)
        cmd = [LAUNCHCTL, "agent", "-q", "default", "-j", "2", "--burst"]
        start = time.perf_counter()
        with MachineCPU() as cpu, background(cmd, env, tmp / "agent.log") as proc:
            wait_exit(proc, max(300.0, count * 0.5))
            drain_s = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"agent exited {proc.returncode}: {(tmp / 'agent.log').read_text()}")
        counts = state_counts(env)
    if counts.get("finished") != count:
        raise RuntimeError(f"expected {count} finished runs, got {counts}")
    return {"enqueue_s": enqueue_s, "drain_s": drain_s, "cpu_ms": cpu.ms, "states": counts}


def tsp_env(tmp: Path, count: int) -> dict[str, str]:
    """An environment for a private task-spooler server under ``tmp``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TS_")}
    env.update(TS_SOCKET=str(tmp / "tsp.socket"), TMPDIR=str(tmp), TS_MAXFINISHED=str(count + 100))
    return env


def tsp_states(env: dict[str, str]) -> list[tuple[str, str]]:
    """(state, exit level) of every job the server knows."""
    out = subprocess.run(["tsp", "-l"], env=env, capture_output=True, text=True, check=True)
    jobs = []
    for line in out.stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2:
            level = parts[3] if parts[1] == "finished" and len(parts) > 3 else ""
            jobs.append((parts[1], level))
    return jobs


def tsp_throughput(count: int) -> dict[str, Any]:
    """Queue ``count`` `true` jobs on a private `tsp -S 2` server; time enqueue to all done."""
    with tempfile.TemporaryDirectory(
        prefix="launchctl-bench-tsp-", ignore_cleanup_errors=True
    ) as name:
        env = tsp_env(Path(name), count)
        try:
            subprocess.run(["tsp", "-S", "2"], env=env, check=True)  # starts the server
            start = time.perf_counter()
            last = ""
            with MachineCPU() as cpu:
                for _ in range(count):
                    last = subprocess.run(
                        ["tsp", "true"], env=env, capture_output=True, text=True, check=True
                    ).stdout.strip()
                enqueue_s = time.perf_counter() - start
                subprocess.run(["tsp", "-w", last], env=env, capture_output=True)
                total_s = time.perf_counter() - start  # the last job queued has ended...
            if not all(s == "finished" for s, _ in tsp_states(env)):  # ...but not another
                wait_for(
                    lambda: all(s == "finished" for s, _ in tsp_states(env)),
                    300.0,
                    "all tsp jobs",
                    step_s=0.002,
                )
                total_s = time.perf_counter() - start
            jobs = tsp_states(env)
        finally:
            subprocess.run(["tsp", "-K"], env=env, capture_output=True)
    ok = sum(1 for s, level in jobs if s == "finished" and level == "0")
    if ok != count:
        raise RuntimeError(f"expected {count} tsp jobs finished with 0, got {ok}")
    return {"enqueue_s": enqueue_s, "total_s": total_s, "cpu_ms": cpu.ms}


def raw_throughput(count: int) -> tuple[float, float | None]:
    """The ceiling for a launcher written in Python: a loop in this process that keeps two
    ``true`` processes running (``subprocess.Popen``, each in its own session, its output
    in a file of its own, its end seen through a pidfd) until ``count`` have run; no
    store, no working copy, no record of the exit. Returns the seconds it took, and the
    machine's CPU milliseconds (this loop's own included)."""
    import selectors

    with (
        tempfile.TemporaryDirectory(prefix="launchctl-bench-raw-") as name,
        MachineCPU(own=True) as cpu,
    ):
        selector = selectors.DefaultSelector()
        started = done = 0
        start = time.perf_counter()

        def spawn() -> None:
            nonlocal started
            with open(os.path.join(name, f"out.{started}"), "wb") as log:
                proc = subprocess.Popen(
                    ["true"], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            selector.register(os.pidfd_open(proc.pid), selectors.EVENT_READ, proc)
            started += 1

        while started < min(2, count):
            spawn()
        while done < count:
            for key, _events in selector.select():
                selector.unregister(key.fd)
                os.close(key.fd)
                key.data.wait()
                done += 1
                if started < count:
                    spawn()
        took = time.perf_counter() - start
    return took, cpu.ms


def create_cost_us(count: int = 300) -> float:
    """Microseconds to make a folder and a small file in it, where the runs' files go
    (TMPDIR): what one run's folder costs on this disk. A full or fragmented file system
    makes it tens of times dearer, for launchctl (a folder, a working copy and a log per
    run) and for tsp (an output file per job) alike."""
    with tempfile.TemporaryDirectory(prefix="launchctl-bench-fs-") as name:
        start = time.perf_counter()
        for i in range(count):
            folder = os.path.join(name, str(i))
            os.mkdir(folder)
            with open(os.path.join(folder, "f"), "wb") as fh:
                fh.write(b"x\n")
        return (time.perf_counter() - start) / count * 1e6


def bench_throughput(settings: Settings, report: Report) -> None:
    """Trivial runs through one agent (-j 2) against task-spooler (-S 2) and a raw
    subprocess loop (two at a time), alternating."""
    count, reps = settings.throughput_runs, settings.throughput_reps
    have_tsp = shutil.which("tsp") is not None
    precompile()
    ours: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    raw: list[tuple[float, float | None]] = []
    fs: list[float] = []
    for _ in range(reps):
        fs.append(create_cost_us())
        ours.append(launchctl_throughput(count))
        raw.append(raw_throughput(count))
        if have_tsp:
            theirs.append(tsp_throughput(count))
    add_throughput_rows(report, count, ours, theirs)
    add_baseline_rows(report, count, ours, raw, fs)


def cpu_per_run(results: list[dict[str, Any]], count: int) -> float | None:
    """The median machine CPU milliseconds a run, or None where it was not measured."""
    values = [r["cpu_ms"] / count for r in results if r.get("cpu_ms") is not None]
    return median(values) if values else None


def ms_text(value: float | None) -> str:
    return f"{value:.2f} ms" if value is not None else "-"


def add_baseline_rows(
    report: Report,
    count: int,
    ours: list[dict[str, Any]],
    raw: list[tuple[float, float | None]],
    fs: list[float],
) -> None:
    """The raw subprocess loop's rows (its rate, its CPU a run), and the file system's
    cost of a folder and a file."""
    drain = median([r["drain_s"] for r in ours])
    raw_s = median([seconds for seconds, _ in raw])
    our_cpu = cpu_per_run(ours, count)
    raw_cpu = cpu_per_run([{"cpu_ms": ms} for _, ms in raw], count)
    report.rows += [
        Row(
            f"throughput: {count} trivial runs, agent -j 2, against a raw subprocess loop",
            f"{count / drain:.0f} runs/s",
            f"{count / raw_s:.0f} runs/s",
            "Python `subprocess.Popen` loop, 2 at a time, no store",
            f"{raw_s / drain:.2f}x the loop's rate",
            "(report)",
            "-",
        ),
        Row(
            "throughput: CPU a run, whole machine, against the raw loop",
            ms_text(our_cpu),
            ms_text(raw_cpu),
            "the raw loop's own CPU and its `true` processes'",
            f"{our_cpu / raw_cpu:.2f}x the loop's" if our_cpu and raw_cpu else "-",
            "(info)",
            "-",
        ),
        Row(
            "file system: a folder and a small file in it (TMPDIR)",
            "-",
            f"{median(fs):.0f} us",
            "mkdir + create + write, median of the repetitions",
            "-",
            "(info)",
            "-",
        ),
    ]
    report.raw["throughput"].update(
        raw_loop_s=[seconds for seconds, _ in raw],
        raw_loop_cpu_ms=[ms for _, ms in raw],
        create_us=fs,
    )
    report.notes.append(
        "throughput, raw loop: the ceiling for a launcher in Python on this machine: this"
        " process keeps two `true` processes running (Popen, a session and an output file"
        " each, the end seen through a pidfd) until all have run; nothing is recorded."
        " The file system row: making a folder and a file in the runs' TMPDIR; a run costs"
        " launchctl four such entries (its folder, working copy folder and file, log) and"
        " the agent's spawner one (the exit code file), a tsp job one (its output)."
    )


def add_throughput_rows(
    report: Report, count: int, ours: list[dict[str, Any]], theirs: list[dict[str, Any]]
) -> None:
    """Table rows and raw numbers for the throughput benchmark."""
    drain = median([r["drain_s"] for r in ours])
    enq = median([r["enqueue_s"] for r in ours])
    both = median([r["enqueue_s"] + r["drain_s"] for r in ours])
    tsp_total = median([r["total_s"] for r in theirs])
    tsp_enq = median([r["enqueue_s"] for r in theirs])
    our_cpu = cpu_per_run(ours, count)
    tsp_cpu = cpu_per_run(theirs, count)
    name = f"task-spooler `tsp -S 2`, {count} `tsp true`"
    have = bool(theirs)

    def rate(seconds: float) -> str:
        return f"{count / seconds:.0f} runs/s"

    def vs(ours_s: float) -> str:
        return f"{tsp_total / ours_s:.2f}x tsp's rate" if have else "-"

    report.rows += [
        Row(
            f"throughput: {count} trivial runs, agent -j 2 (queue pre-filled)",
            rate(drain),
            rate(tsp_total) if have else "-",
            name if have else "tsp not installed",
            vs(drain),
            "(report)",
            "-",
        ),
        Row(
            f"throughput: wall time, {count} runs (agent start to exit)",
            secs(drain),
            secs(tsp_total) if have else "-",
            "tsp: first enqueue to all done",
            vs(drain),
            "(report)",
            "-",
        ),
        Row(
            f"throughput: enqueue {count} runs via the Python API",
            secs(enq),
            secs(tsp_enq) if have else "-",
            f"{count} `tsp true` calls (jobs run meanwhile)",
            "-",
            "(info)",
            "-",
        ),
        Row(
            f"throughput: API enqueue + drain, {count} runs",
            secs(both),
            secs(tsp_total) if have else "-",
            "tsp: first enqueue to all done",
            vs(both),
            "(info)",
            "-",
        ),
        Row(
            "throughput: CPU a run, whole machine (every process, all CPUs)",
            ms_text(our_cpu),
            ms_text(tsp_cpu),
            "tsp: its server, a `tsp true` client and the job",
            f"{our_cpu / tsp_cpu:.2f}x tsp's" if our_cpu and tsp_cpu else "-",
            "(report)",
            "-",
        ),
    ]
    report.raw["throughput"] = {"runs": count, "reps": len(ours), "launchctl": ours, "tsp": theirs}
    report.notes.append(
        f"throughput: median of {len(ours)} alternating repetitions of {count} runs each."
        " launchctl: a code job with entry point `true`, runs queued in this process with"
        " `launchctl.launch.submit` (one transaction per run) before the clock starts; timed is"
        " `launchctl agent -q default -j 2 --burst` from spawn to exit, seen through a pidfd"
        " (interpreter start included, launchctl byte-compiled first as an install is);"
        " every run gets its"
        " own working copy (the snapshot unpacked once, then written afresh per run) and"
        " its own log file."
        " tsp: a private server (own TS_SOCKET and TMPDIR, TS_MAXFINISHED raised, TS_SAVELIST"
        " unset) started with `tsp -S 2` before the clock; timed is from the first of"
        f" {count} sequential `tsp true` calls (jobs start while later ones are queued, output"
        " stored in files as tsp does by default) until `tsp -w` on the last one returns"
        " (or, when another job was still running then, `tsp -l` shows every job finished);"
        " the server is killed with `tsp -K` afterwards."
        " CPU a run: the busy time of every CPU (/proc/stat) over the timed span, less the"
        " benchmark process's own, over the runs; launchctl's counts the agent, its spawner"
        " and the runs, tsp's its server, its clients and the jobs. With two CPUs,"
        " a launcher's rate can reach at most 2000 / (its CPU ms a run) runs/s."
    )
