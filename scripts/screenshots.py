#!/usr/bin/env python3
"""The README's screenshots of the web view, taken from a real store with live runs.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots]

Makes a store of its own (a temporary LAUNCHCTL_HOME): two queues, one with a template
(``lr``, ``epochs``, ``size``), a job, runs that finished, failed, run and wait, and a
real agent working through them. Serves it with ``launchctl ui`` on loopback and drives
Debian's Chromium (scripts/services.sh chromium) headless:

    runs.png          /runs with the runs live: running, queued, finished, failed
    launch-form.png   the launch form of the templated queue, a value past its limit
                      refused beside its input

Everything it started (agent, runs, server, browser) is stopped on the way out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOKEN = "screenshots-token-0123456789abcdef0123456789abcdef"
TRAIN = """\
import json, os, sys, time
cfg = json.loads(os.environ.get("WANDB_CONFIG") or "{}")
lr, epochs = float(cfg.get("lr", 0.01)), int(cfg.get("epochs", 3))
for epoch in range(1, epochs + 1):
    if lr >= 0.1 and epoch == 2:
        sys.exit("loss is nan at epoch 2: lr too high")
    print(f"epoch {epoch}/{epochs} loss {2.0 / (epoch * (1 + 10 * lr)):.4f}", flush=True)
    time.sleep(30 if epochs > 10 else 0.2)
"""
GPU_QUEUE = {
    "resource_args": {
        "local-process": {
            "gpus": 2,
            "env": {"LR": "{{lr}}", "EPOCHS": "{{epochs}}", "SIZE": "{{size}}"},
        }
    },
    "template_variables": {
        "lr": {"type": "number", "minimum": 0.00001, "maximum": 0.1, "default": 0.001,
               "description": "learning rate"},
        "epochs": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10,
                   "description": "passes over the data"},
        "size": {"type": "string", "enum": ["small", "base", "large"], "default": "base",
                 "description": "model size"},
    },
}  # fmt: skip


def wait(condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            sys.exit(f"screenshots: timed out waiting for {what}")
        time.sleep(0.1)


class Cli:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(self, *args: str, input: str | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "launchctl", *args],
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            sys.exit(f"screenshots: launchctl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def states(self) -> dict[str, str]:
        return {r["id"]: r["state"] for r in json.loads(self("runs", "list", "--json"))}


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def make_store(tmp: Path, cli: Cli) -> list[str]:
    """The queues, the job and five short runs (one fails); returns their ids."""
    code = tmp / "resnet"
    code.mkdir()
    (code / "train.py").write_text(TRAIN)
    cli("queue", "create", "gpu-a100", "-r", "local-process", "--config", json.dumps(GPU_QUEUE))
    cli("queue", "create", "cpu", "-r", "local-process")
    cli("job", "create", "code", str(code), "-E", "python train.py", "-n", "resnet")
    short = []
    for n, (lr, bs) in enumerate([(0.1, 64), (0.03, 64), (0.01, 128), (0.003, 128), (0.001, 256)]):
        sets = [f"lr={lr}", f"batch_size={bs}", "epochs=3"]
        args = ["-q", "cpu", "-j", "resnet", "--name", f"resnet-sweep-{n}"]
        short.append(cli("launch", *args, *(x for kv in sets for x in ("--set", kv))))
    return short


def launch_long(cli: Cli) -> list[str]:
    """Four long runs on the templated queue: two run, two wait behind them."""
    long = []
    for n, (lr, bs) in enumerate([(0.02, 256), (0.005, 256), (0.002, 512), (0.001, 512)]):
        sets = [f"lr={lr}", f"batch_size={bs}", "epochs=40"]
        args = ["-q", "gpu-a100", "-j", "resnet", "--name", f"resnet-long-{n}"]
        args += ["-v", f"lr={lr}", "-v", "epochs=40", "-v", "size=large"]
        args += ["-P", "high" if n == 0 else "medium"]
        long.append(cli("launch", *args, *(x for kv in sets for x in ("--set", kv))))
    return long


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    from tests.ui.browser import missing, start_chromium

    why = missing()
    if why:
        sys.exit(f"screenshots: no browser to drive: {why}")
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="launchctl-screenshots-"))
    env = {**os.environ, "LAUNCHCTL_HOME": str(tmp / "home"), "LAUNCHCTL_UI_TOKEN": TOKEN}
    env.pop("LAUNCHCTL_USER", None)
    cli = Cli(env)
    procs: list[subprocess.Popen[str]] = []
    driver = None
    try:
        short = make_store(tmp, cli)
        agent_args = ["-q", "cpu", "-q", "gpu-a100", "-j", "2", "--gpus", "0,1,2,3"]
        agent = subprocess.Popen(
            [sys.executable, "-m", "launchctl", "agent", *agent_args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        procs.append(agent)
        wait(lambda: all(cli.states()[r] in ("finished", "failed") for r in short),
             "the short runs to end")  # fmt: skip
        long = launch_long(cli)
        wait(lambda: sum(cli.states()[r] == "running" for r in long) == 2,
             "two long runs to run")  # fmt: skip
        ui = subprocess.Popen(
            [sys.executable, "-m", "launchctl", "ui", "--port", "0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        procs.append(ui)
        assert ui.stdout is not None
        first = ui.stdout.readline()
        if not first.startswith("launchctl ui: "):
            sys.exit(f"screenshots: launchctl ui did not start: {first!r}")
        base = first.removeprefix("launchctl ui: ").strip().split("/?token=")[0]

        driver = start_chromium(tmp / "chromium", window_size="1280,760")
        driver.get(f"{base}/?token={TOKEN}")
        driver.get(f"{base}/runs")
        wait(lambda: len(driver.find_elements("css selector", "#runs tr[id^=run-]")) == 9,
             "the runs table")  # fmt: skip
        # A log line or two in, so the running rows show their durations ticking.
        wait(lambda: "epoch 1/40" in cli("logs", long[0]), "the first long run's output")
        fit_to_page(driver)
        driver.save_screenshot(str(args.out / "runs.png"))

        driver.set_window_size(1280, 760)
        driver.get(f"{base}/queues/gpu-a100")
        driver.execute_script(
            "const f = document.querySelector('#launch-form'); f.noValidate = true;"
            "f.querySelector('[name=job]').value = 'resnet';"
            "f.querySelector('[name=lr]').value = '0.003';"
            "f.querySelector('[name=epochs]').value = '80';"
        )
        driver.find_element("css selector", "#launch-form [type=submit]").click()
        wait(lambda: driver.find_elements("css selector", ".field-error[data-field=epochs]"),
             "the refusal beside epochs")  # fmt: skip
        fit_to_page(driver)
        driver.save_screenshot(str(args.out / "launch-form.png"))
        for run_id, state in cli.states().items():
            if state not in ("finished", "failed", "stopped"):
                cli("runs", "cancel", run_id)
        wait(lambda: all(s in ("finished", "failed", "stopped") for s in cli.states().values()),
             "every run to end")  # fmt: skip
    finally:
        if driver is not None:
            driver.quit()
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    for name in ("runs.png", "launch-form.png"):
        print(args.out / name)
    return 0


def fit_to_page(driver: Any) -> None:
    """Make the window as tall as the page (at most 1600 px), so one shot holds it all."""
    width = driver.get_window_size()["width"]
    driver.set_window_size(width, 300)  # the page's own height, not the window's
    height, chrome = driver.execute_script(
        "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight];"
    )
    driver.set_window_size(width, min(int(height) + int(chrome) + 16, 1600))


if __name__ == "__main__":
    sys.exit(main())
