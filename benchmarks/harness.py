"""What every benchmark shares: settings, timing, fresh stores and background processes.

Every LAUNCHCTL_HOME is a fresh temporary folder (``fresh_home``); every background process
is started in its own session and stopped on the way out, errors included (``background``).
Runs are timed by the wall clock their first act writes into a stamp file (``read_stamp``)
and by the state changes the store records (``run_timeline``).
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
RUN_WAIT_S = 40.0  # longer than the agent's 30 s fallback poll


@dataclass
class Settings:
    """How much work each benchmark does."""

    startup_reps: int
    dispatch_reps: int
    throughput_runs: int
    throughput_reps: int
    container_reps: int
    cache_hit_reps: int
    out: Path
    sync_runs: int = 1000
    only: str | None = None  # one benchmark by name (run.py --only)


def launchctl_exe() -> str:
    """The launchctl console script beside this interpreter, else the one on PATH."""
    beside = Path(PYTHON).parent / "launchctl"
    if beside.exists():
        return str(beside)
    found = shutil.which("launchctl")
    if found is None:
        sys.exit("benchmarks: launchctl is not installed (pip install -e .)")
    return found


LAUNCHCTL = launchctl_exe()


def median(values: list[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else float("nan")


def timed(cmd: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one command run to completion, output discarded; fails loudly."""
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.decode()}")
    return elapsed


def wait_for(check: Callable[[], bool], timeout_s: float, what: str, step_s: float = 0.002) -> None:
    """Poll ``check`` until it holds; raise after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(step_s)


def wait_exit(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Return as soon as ``proc`` has ended (it is reaped), or raise after ``timeout_s``.

    ``Popen.wait(timeout=...)`` polls, sleeping up to 50 ms between looks: a timed 0.7 s
    agent was seen 0 to 50 ms after it ended, a quantum of its measured rate. A pidfd
    becomes readable the moment the process ends."""
    import select

    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfds here (Linux < 5.3): the polling wait
        proc.wait(timeout=timeout_s)
        return
    try:
        if not select.select([fd], [], [], timeout_s)[0]:
            raise subprocess.TimeoutExpired(proc.args, timeout_s)
    finally:
        os.close(fd)
    proc.wait()


@contextmanager
def fresh_home(label: str) -> Iterator[tuple[Path, dict[str, str]]]:
    """A temporary folder and an environment whose LAUNCHCTL_HOME points inside it."""
    tmp = Path(tempfile.mkdtemp(prefix=f"launchctl-bench-{label}-"))
    env = dict(os.environ, LAUNCHCTL_HOME=str(tmp / "home"))
    env.pop("LAUNCHCTL_DEBUG", None)
    try:
        yield tmp, env
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def use_home(env: dict[str, str]) -> Iterator[Any]:
    """A launchctl Store opened in this process on the environment's LAUNCHCTL_HOME."""
    from launchctl.store import Store

    store = Store(Path(env["LAUNCHCTL_HOME"]))
    try:
        yield store
    finally:
        store.close()


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Stop a background process: SIGTERM, again, then SIGKILL its whole group."""
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGTERM, 5.0)):
        if proc.poll() is not None:
            break
        with suppress(ProcessLookupError):
            proc.send_signal(sig)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(wait_s)
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(5.0)


@contextmanager
def background(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``cmd`` in its own session with output to ``log``; stop it on the way out."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        stop_process(proc)


def make_code_dir(tmp: Path) -> Path:
    """A one-file code folder for the benchmark jobs."""
    code = tmp / "code"
    code.mkdir()
    (code / "README.md").write_text("benchmark job\n")
    return code


def create_job(env: dict[str, str], code: Path, name: str, entrypoint: list[str]) -> None:
    """Create a code job through the Python API."""
    from launchctl import jobs

    with use_home(env) as store:
        jobs.create_code_job(store, str(code), entrypoint=entrypoint, name=name)


def enqueue(env: dict[str, str], job: str, count: int) -> float:
    """Queue ``count`` runs of ``job`` on the default queue via the API; returns the seconds."""
    from launchctl.launch import LaunchRequest, prepare_spec, submit

    with use_home(env) as store:
        start = time.perf_counter()
        spec = prepare_spec(LaunchRequest(queue="default", job=job))
        for _ in range(count):
            submit(store, spec)
        return time.perf_counter() - start


def state_counts(env: dict[str, str]) -> dict[str, int]:
    """How many runs are in each state."""
    with use_home(env) as store:
        return dict(Counter(r["state"] for r in store.runs.select(limit=None)))


def read_stamp(path: Path) -> float:
    """The time a dispatch child wrote, once the file is complete."""

    # The child records its own start, so polling slowly loses no precision (and less CPU).
    def complete() -> bool:
        return path.exists() and path.read_text().endswith("\n")

    wait_for(complete, RUN_WAIT_S, str(path), step_s=0.005)
    return float(path.read_text())


def wait_run_end(env: dict[str, str], run_id: str) -> None:
    """Wait until a run has reached a terminal state."""
    from launchctl.states import TERMINAL

    with use_home(env) as store:
        wait_for(
            lambda: store.runs.state(run_id) in TERMINAL,
            RUN_WAIT_S,
            f"run {run_id} to end",
            step_s=0.01,
        )


def run_timeline(env: dict[str, str], run_id: str) -> dict[str, Any]:
    """A finished run's state, creation time and the time of each state change."""
    with use_home(env) as store:
        run = store.runs.get(run_id)
        events = {e["to_state"]: e["at"] for e in store.runs.events(run_id)}
    return {"state": run["state"], "created_at": run["created_at"], "events": events}


def wait_agent(env: dict[str, str], queue: str) -> None:
    """Wait until an agent serving ``queue`` has registered and its file watch is up."""
    with use_home(env) as store:
        wait_for(
            lambda: any(queue in a["queues"] for a in store.agents.live(within_s=60)),
            30.0,
            "the agent to register",
            step_s=0.05,
        )
    time.sleep(1.0)  # its file watch starts just after registering


def span(events: dict[str, float], first: str, last: str) -> float:
    """Seconds between two state changes of a run (NaN when one is missing)."""
    return events.get(last, float("nan")) - events.get(first, float("nan"))


def why_failed(env: dict[str, str], run_id: str) -> str:
    """A failed run's stage, reason, last event message and log tail, for error messages."""
    with use_home(env) as store:
        run = store.runs.get(run_id)
        events = store.runs.events(run_id)
    log = Path(run["log_path"]) if run["log_path"] else None
    tail = log.read_text(errors="replace")[-1500:] if log and log.exists() else ""
    message = events[-1]["message"] if events else None
    return f"stage {run['stage']}, reason {run['reason']}, message {message}; log tail:\n{tail}"


def interleaved(rep: int, measures: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """Each measurement once, order rotated by ``rep``, a pause before each; results by name."""
    names = list(measures)
    shift = rep % len(names)
    results: dict[str, Any] = {}
    for name in names[shift:] + names[:shift]:
        time.sleep(0.3)  # let the agent go idle on its file watch
        results[name] = measures[name]()
    return results
