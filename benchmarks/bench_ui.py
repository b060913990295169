"""Benchmark 9, ui (issue 16): the web view with 200 runs listed, 40 of them running.

A store holds 200 runs of one job on the default queue, their configs differing in two
keys: 160 ended (finished, every fifth failed) and the 40 newest running. ``launchctl ui``
serves it on loopback. Measured, each against the CLI on the same store in the same run:

(a) page load: ``GET /runs`` (HTTP, the whole page read) and, when Chromium is here, the
    browser's load event for ``/runs`` (navigation timing: start to ``loadEventEnd``),
    against ``launchctl runs list --json --limit 200`` (one look at the same runs);
(b) update latency, while 20 other running runs keep changing state in the background:
    one running run moved to ``finished`` in the store (the core's own ``states.move``, as
    an agent does) -> the ``run`` event arriving at an HTTP client of
    ``/events``, and -> the row's state cell changing in an open ``/runs`` page (a
    MutationObserver stamps the wall clock in the page), against the same
    ``runs list --json`` look: a terminal user polling the CLI pays at least that per look.

Both clocks are this machine's wall clock (``time.time()`` and the page's
``performance.timeOrigin + performance.now()``).
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import sys
import tempfile
import threading
import time
import urllib.request
from functools import partial
from operator import contains
from pathlib import Path
from typing import Any

from harness import (
    LAUNCHCTL,
    ROOT,
    Settings,
    background,
    create_job,
    fresh_home,
    make_code_dir,
    median,
    timed,
    use_home,
    wait_for,
)
from report import Report, Row, met, secs

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RUNS = 200
RUNNING = 40
MEASURED = 20  # at most this many of the running runs are moved to finished and timed;
# the others keep changing state in the background meanwhile (Churn)
PAGE_TARGET_S = 0.5
UPDATE_TARGET_S = 1.0
TOKEN = "bench-ui-token-0123456789abcdef0123456789abcdef"

# Stamps, per row and state-cell text, the first time the page shows it.
OBSERVE_JS = """
window.__seen = {};
const stamp = () => {
  for (const tr of document.querySelectorAll('#runs tr[id^="run-"]')) {
    const cell = tr.querySelector('.state');
    const key = tr.id + ':' + (cell ? cell.textContent.trim() : '');
    if (!(key in window.__seen)) window.__seen[key] = performance.timeOrigin + performance.now();
  }
};
stamp();
new MutationObserver(stamp).observe(document.querySelector('#runs'),
  {subtree: true, childList: true, attributes: true, characterData: true});
"""


def ui_problem() -> str | None:
    """Why the web view cannot be served here, or None."""
    for module in ("starlette", "uvicorn", "launchctl.ui"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[ui]')"
    return None


def populate(env: dict[str, str], tmp: Path) -> list[str]:
    """200 runs: 160 ended, then the 40 newest running; returns the running ones' ids."""
    from launchctl import states
    from launchctl.launch import LaunchRequest, prepare_spec, submit
    from launchctl.states import State

    create_job(env, make_code_dir(tmp), "train", ["sleep", "1"])
    running = []
    with use_home(env) as store:
        for n in range(RUNS):
            sets = [f"lr={0.001 * (1 + n % 7):.3f}", f"batch_size={32 * (1 + n % 3)}"]
            spec = prepare_spec(LaunchRequest(queue="default", job="train", sets=sets))
            run_id = submit(store, spec, say=lambda _line: None)["id"]
            for to in (State.CLAIMED, State.STARTING, State.RUNNING):
                states.move(store, run_id, to)
            if n < RUNS - RUNNING:
                failed = n % 5 == 0
                end = State.FAILED if failed else State.FINISHED
                states.move(store, run_id, end, exit_code=1 if failed else 0)
            else:
                running.append(run_id)
    return running


class Churn:
    """Keeps runs changing in the background: each tick takes one of ``run_ids`` through
    running -> queued -> claimed -> starting -> running (four state changes), as an agent
    that requeues and takes a run again does."""

    def __init__(self, env: dict[str, str], run_ids: list[str], tick_s: float = 0.1) -> None:
        self.env, self.run_ids, self.tick_s = env, run_ids, tick_s
        self.moves = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from launchctl import states
        from launchctl.states import State

        cycle = (State.QUEUED, State.CLAIMED, State.STARTING, State.RUNNING)
        with use_home(self.env) as store:
            n = 0
            while not self.stop.wait(self.tick_s):
                for to in cycle:
                    states.move(store, self.run_ids[n % len(self.run_ids)], to)
                    self.moves += 1
                n += 1

    def __enter__(self) -> Churn:
        self.started = time.perf_counter()
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        self.seconds = time.perf_counter() - self.started


class EventClient:
    """An HTTP client of ``/events``: the wall-clock arrival of each (run, state)."""

    def __init__(self, host: str, port: int) -> None:
        self.arrived: dict[tuple[str, str], float] = {}
        self.conn = http.client.HTTPConnection(host, port, timeout=60)
        self.conn.request("GET", "/events", headers={"Authorization": f"Bearer {TOKEN}"})
        self.resp = self.conn.getresponse()
        if self.resp.status != 200:
            raise RuntimeError(f"GET /events answered {self.resp.status}")
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        event = ""
        try:
            for raw in self.resp:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event == "run":
                    data = json.loads(line.split(":", 1)[1])
                    self.arrived.setdefault((data["id"], data["state"]), time.time())
        except (OSError, ValueError, http.client.HTTPException):
            return  # the stream ended on the way out

    def close(self) -> None:
        """End the stream under the reader (it sees end of file), then close."""
        import socket

        if self.conn.sock is not None:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(10)
        self.conn.close()


def server_url(log: Path) -> str:
    """The base URL from the first line ``launchctl ui`` prints."""
    prefix = "launchctl ui: "

    def printed() -> bool:
        return log.exists() and any(ln.startswith(prefix) for ln in log.read_text().splitlines())

    wait_for(printed, 30.0, "launchctl ui to print its URL", step_s=0.02)
    line = next(ln for ln in log.read_text().splitlines() if ln.startswith(prefix))
    return line[len(prefix) :].split("/?token=")[0]


def get_page(url: str) -> tuple[float, str]:
    """Seconds to read the whole page, and the page."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as resp:
        body = resp.read().decode()
    return time.perf_counter() - start, body


def start_browser(profile: Path) -> Any:
    from tests.ui.browser import missing, start_chromium

    why = missing()
    if why:
        return why
    return start_chromium(profile)


def bench_ui(settings: Settings, report: Report) -> None:
    """Page load and update latency of the web view against the CLI's one look."""
    problem = ui_problem()
    if problem is not None:
        report.rows.append(Row(f"ui: skipped ({problem})", *["-"] * 6))
        report.notes.append(f"ui: skipped: {problem}")
        report.raw["ui"] = {"skipped": problem}
        return
    from launchctl import states
    from launchctl.states import State

    reps = settings.dispatch_reps
    raw: dict[str, Any] = {"runs": RUNS, "running": RUNNING, "reps": reps}
    with fresh_home("ui") as (tmp, env), tempfile.TemporaryDirectory() as profile:
        env["LAUNCHCTL_UI_TOKEN"] = TOKEN
        running = populate(env, tmp)
        cli_look = [LAUNCHCTL, "runs", "list", "--json", "--limit", str(RUNS)]
        with background([LAUNCHCTL, "ui", "--port", "0"], env, tmp / "ui.log"):
            base = server_url(tmp / "ui.log")
            host, port = base.removeprefix("http://").rsplit(":", 1)
            timed(cli_look, env)  # warm-up: page cache, .pyc files, the server's templates
            _, body = get_page(base + "/runs")
            raw["rows_on_page"] = body.count('<tr id="run-')
            page_s, cli_s = [], []
            for rep in range(reps):  # interleaved, the order turned each repetition
                pair = [lambda: page_s.append(get_page(base + "/runs")[0]),
                        lambda: cli_s.append(timed(cli_look, env))]  # fmt: skip
                for measure in pair[rep % 2 :] + pair[: rep % 2]:
                    measure()
            raw["page_get_s"], raw["cli_look_s"] = page_s, cli_s

            driver = start_browser(Path(profile))
            if isinstance(driver, str):
                raw["browser_skipped"] = driver
                driver = None
            load_s: list[float] = []
            browser_s: list[float] = []
            sse_s: list[float] = []
            events = EventClient(host, int(port))
            try:
                if driver is not None:
                    driver.get(f"{base}/?token={TOKEN}")
                    for _ in range(reps):
                        driver.get(base + "/runs")
                        load_s.append(
                            driver.execute_script(
                                "const n = performance.getEntriesByType('navigation')[0];"
                                "return (n.loadEventEnd - n.startTime) / 1000;"
                            )
                        )
                    driver.execute_script(OBSERVE_JS)
                churn_ids = running[-(RUNNING - MEASURED) :]
                with use_home(env) as store, Churn(env, churn_ids) as churn:
                    for run_id in running[:MEASURED][:reps]:
                        time.sleep(0.3)  # apart: each change is its own poll's news
                        t0 = time.time()
                        states.move(store, run_id, State.FINISHED, exit_code=0)
                        key = (run_id, "finished")
                        wait_for(partial(contains, events.arrived, key), 30.0, "the run event")
                        sse_s.append(events.arrived[key] - t0)
                        if driver is not None:
                            seen = wait_for_row(driver, f"run-{run_id}:finished")
                            browser_s.append(seen / 1000 - t0)
            finally:
                events.close()
                if driver is not None:
                    driver.quit()
    raw.update(browser_load_s=load_s, sse_update_s=sse_s, browser_update_s=browser_s)
    raw["churn_moves_per_s"] = churn.moves / churn.seconds
    report.raw["ui"] = raw
    look = median(cli_s)
    rows = [
        ("ui: `GET /runs`, 200 runs (page read)", median(page_s), PAGE_TARGET_S),
        ("ui: `/runs` in Chromium (load event)", median(load_s), PAGE_TARGET_S),
        ("ui: state change -> `/events` client", median(sse_s), UPDATE_TARGET_S),
        ("ui: state change -> row cell in Chromium", median(browser_s), UPDATE_TARGET_S),
    ]
    for name, value, target in rows:
        if value != value:  # NaN: no browser here
            report.rows.append(Row(f"{name}: skipped", *["-"] * 6))
            continue
        report.rows.append(
            Row(
                name,
                secs(value),
                secs(look),
                "`runs list --json --limit 200` (one CLI look)",
                f"{value - look:+.3f} s ({value / look:.2f}x)",
                f"< {target} s",
                met(value < target),
            )
        )
    report.notes.append(
        f"ui: {RUNS} runs ({RUNNING} running) on one store; the page listed"
        f" {raw['rows_on_page']} rows. Medians of {reps} repetitions; page reads and CLI looks"
        " interleaved. While updates are timed, the other running runs keep changing state"
        f" ({raw['churn_moves_per_s']:.0f} state changes a second, requeued and taken again)."
        " An update is one running run moved to finished through the core's"
        " states.move, timed from just before the move to the event's arrival at an HTTP"
        " client of /events and to a MutationObserver's stamp of the row's state cell in"
        " an open /runs page; the server polls the store every 0.2 s."
        + (f" Browser rows skipped: {raw['browser_skipped']}." if "browser_skipped" in raw else "")
    )


def wait_for_row(driver: Any, key: str) -> float:
    """The page's wall-clock stamp (ms) of when it first showed ``key`` (row:state)."""
    found: list[float] = []

    def seen() -> bool:
        value = driver.execute_script("return window.__seen[arguments[0]] || null;", key)
        if value is not None:
            found.append(float(value))
        return value is not None

    wait_for(seen, 30.0, f"the page to show {key}", step_s=0.02)
    return found[0]
