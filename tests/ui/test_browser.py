"""The web view in a real browser: Debian's Chromium, headless, against a real
``launchctl ui`` on loopback, a real agent and a real store.

One Chromium serves the module (tests/ui/browser.py); each test has its own store and
server. "Live" means without a reload: a test tags the document (``page.mark()``) and
checks the tag is still there when the change has shown.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, StartAgent, cli, cli_json, make_script, table_counts
from tests.ui.browser import Page, browser_fixture, page_fixture  # noqa: F401 - fixtures

SECRET = "s3cr3t-value-9d1f"
# A run name may hold anything but a path separator, so no closing tag: an image whose
# error handler runs, and a script element that swallows what follows it.
EVIL = "<img src=x onerror=window.__pwned=1;alert(1)><script>window.__pwned=2;alert(2)"
EVIL_VALUE = "</script><script>window.__pwned=3;alert(3)</script>"


def setup_queue(tmp_path: Path) -> Path:
    """A queue ``team`` whose template field ``steps`` takes 1 to 5, whose runs get the
    secret ``api-key`` as ``API_KEY``, and a job ``demo`` that prints, then waits for the
    returned gate file to exist before it finishes."""
    gate = tmp_path / "gate"
    make_script(
        tmp_path / "demo",
        "run.py",
        "import os, pathlib, time\n"
        "print('step 1 of', os.environ['STEPS'], flush=True)\n"
        "print('key is', os.environ['API_KEY'], flush=True)\n"
        "print('waiting for the gate', flush=True)\n"
        f"gate = pathlib.Path({str(gate)!r})\n"
        "while not gate.exists():\n"
        "    time.sleep(0.05)\n"
        "print('all steps done', flush=True)\n",
    )
    config = {
        "resource_args": {
            "local-process": {"env": {"STEPS": "{{steps}}", "API_KEY": {"secret": "api-key"}}}
        },
        "template_variables": {
            "steps": {"type": "integer", "minimum": 1, "maximum": 5, "default": 2,
                      "description": "steps per run"},
        },
    }  # fmt: skip
    cli("queue", "create", "team", "-r", "local-process", "--config", json.dumps(config),
        check=True)  # fmt: skip
    cli("secret", "set", "api-key", input=SECRET, check=True)
    cli("job", "create", "code", str(tmp_path / "demo"), "-E", "python run.py", "-n", "demo",
        check=True)  # fmt: skip
    return gate


def run_ids() -> list[str]:
    return [r["id"] for r in cli_json("runs", "list")]


def test_a_run_launched_from_the_form_goes_live_to_finished(
    page: Page, tmp_path: Path, start_agent: StartAgent
) -> None:
    gate = setup_queue(tmp_path)
    page.open("/queues/team")
    field = page.css("#launch-form [name=steps]")
    assert field.get_attribute("max") == "5" and field.get_attribute("min") == "1"
    assert "5" in page.text("#launch-form .limits")
    field.clear()
    field.send_keys("3")
    job = page.css("#launch-form [name=job]")
    if job.tag_name == "select":
        from selenium.webdriver.support.ui import Select

        Select(job).select_by_visible_text(
            next(o.text for o in Select(job).options if "demo" in o.text)
        )
    else:
        job.clear()
        job.send_keys("demo")
    page.css("#launch-form [type=submit]").click()
    page.wait(lambda: "/runs/" in page.driver.current_url, what="the run's page")
    run_id = page.driver.current_url.rstrip("/").rsplit("/", 1)[1]
    assert run_ids() == [run_id]
    assert page.text("#run-state") == "queued"
    page.mark()

    # The runs table in a second window, open before anything happens.
    run_window = page.driver.current_window_handle
    page.driver.switch_to.new_window("window")
    page.open("/runs")
    page.mark()
    assert page.attr(f"#run-{run_id}", "data-state") == "queued"
    runs_window = page.driver.current_window_handle

    start_agent("-q", "team")
    page.driver.switch_to.window(run_window)
    page.wait_text("#run-state", "running")
    page.wait(lambda: "step 1 of 3" in page.text("#log"), what="the first log line")
    page.wait(lambda: "key is ***" in page.text("#log"), what="the masked log line")
    gate.touch()
    page.wait_text("#run-state", "finished")
    page.wait(lambda: "all steps done" in page.text("#log"), what="the last log line")
    assert page.not_reloaded()
    assert SECRET not in page.source()

    page.driver.switch_to.window(runs_window)
    page.wait(
        lambda: page.attr(f"#run-{run_id}", "data-state") == "finished",
        what="the row to turn finished",
    )
    assert page.text(f"#run-{run_id} .state") == "finished"
    assert page.text(f"#run-{run_id} .exit") == "0"
    assert page.not_reloaded()


def test_an_out_of_range_value_is_refused_beside_its_input(page: Page, tmp_path: Path) -> None:
    setup_queue(tmp_path)
    before = table_counts(Path(os.environ["LAUNCHCTL_HOME"]))
    page.open("/queues/team")
    # The browser's own check would stop 9 (max="5"); a user can switch it off, as any
    # hand-made request does: the server must refuse it too.
    page.driver.execute_script(
        "const f = document.querySelector('#launch-form'); f.noValidate = true;"
        "f.querySelector('[name=steps]').removeAttribute('max');"
    )
    page.css("#launch-form [name=job]").send_keys("demo")
    field = page.css("#launch-form [name=steps]")
    field.clear()
    field.send_keys("9")
    page.css("#launch-form [type=submit]").click()
    page.wait(lambda: page.all('.field-error[data-field="steps"]'), what="the refusal beside steps")
    error = page.text('.field-error[data-field="steps"]')
    assert "5" in error, error
    assert page.attr("#launch-form [name=steps]", "value") == "9"  # what was typed stays
    assert "/runs/" not in page.driver.current_url
    assert table_counts(Path(os.environ["LAUNCHCTL_HOME"])) == before
    assert run_ids() == []


def test_a_secret_shows_masked_and_nowhere_in_the_page(
    page: Page, tmp_path: Path, start_agent: StartAgent
) -> None:
    gate = setup_queue(tmp_path)
    gate.touch()
    run_id = cli("launch", "-q", "team", "-j", "demo", "-v", "steps=2", check=True).stdout.strip()
    agent = start_agent("-q", "team", "--burst")
    assert agent.wait() == 0, agent.output()
    page.open(f"/runs/{run_id}")
    page.wait_text("#run-state", "finished")
    page.wait(lambda: "key is ***" in page.text("#log"), what="the masked log line")
    assert page.text("#spec")
    assert SECRET not in page.source()
    page.open("/runs")
    assert SECRET not in page.source()


def test_cancel_stops_a_running_run_live(
    page: Page, tmp_path: Path, start_agent: StartAgent
) -> None:
    setup_queue(tmp_path)  # the gate never opens: the run runs until cancelled
    run_id = cli("launch", "-q", "team", "-j", "demo", check=True).stdout.strip()
    start_agent("-q", "team")
    page.open(f"/runs/{run_id}")
    page.wait_text("#run-state", "running")
    page.mark()
    page.css("#cancel").click()
    # The button posts a form, and the answer brings the run's page back: wait for that
    # page (or for the state, should the page ever cancel in place), then tag it again.
    page.wait(
        lambda: not page.not_reloaded() or page.text("#run-state") == "stopped",
        what="the POST's answer",
    )
    if not page.not_reloaded():
        page.wait(lambda: page.all("#run-state"), what="the run page after the POST")
        page.mark()
    page.wait_text("#run-state", "stopped")
    assert page.not_reloaded()
    assert cli_json("runs", "show", run_id)["state"] == "stopped"


def test_hold_and_release_a_queued_run_from_its_page(page: Page, tmp_path: Path) -> None:
    """Issue 18: the buttons post the page's token and bring the page back saying it."""
    setup_queue(tmp_path)  # no agent: the run stays queued
    run_id = cli("launch", "-q", "team", "-j", "demo", check=True).stdout.strip()
    page.open(f"/runs/{run_id}")
    page.css("#hold").click()
    page.wait(lambda: page.all("#release"), what="the page with a release button")
    assert "held (`launchctl runs release" in page.text("#run-waits")
    assert cli_json("runs", "show", run_id)["held"]
    page.open("/runs")
    assert page.text(f"#run-{run_id} td.state") == "queued (held)"
    page.open(f"/runs/{run_id}")
    page.css("#release").click()
    page.wait(lambda: page.all("#hold"), what="the page with a hold button")
    assert not cli_json("runs", "show", run_id)["held"]


def test_a_run_named_like_a_script_shows_as_text(page: Page, tmp_path: Path) -> None:
    setup_queue(tmp_path)
    cli("launch", "-q", "team", "-j", "demo", "--set", "note=plain", check=True)
    page.open("/runs")
    page.mark()
    # Launched while the table is open: the row arrives through the live path too. Its
    # config value closes a script: a cell of its own once the table shows both runs.
    run_id = cli(
        "launch", "-q", "team", "-j", "demo", "--name", EVIL, "--set", f"note={EVIL_VALUE}",
        check=True,
    ).stdout.strip()  # fmt: skip
    page.wait(lambda: page.all(f"#run-{run_id}"), what="the new row to appear")
    assert page.not_reloaded()
    assert EVIL in page.text(f"#run-{run_id}")
    for n, path in enumerate(("/runs", "/runs", f"/runs/{run_id}", "/")):
        if n:  # the first: the table already open, with the row that came live
            page.open(path)
        assert page.alert_text() is None, path
        assert page.driver.execute_script("return window.__pwned === undefined;"), path
        assert not page.all("img[src=x]"), path
        injected = [s for s in page.all("script") if "__pwned" in (s.get_attribute("text") or "")]
        assert not injected, path
        if path != "/":  # the overview lists active runs only
            assert EVIL in page.text("body"), path
        if n in (1, 2):  # the note's column, now that two runs differ in it; the spec
            assert EVIL_VALUE in page.text("body"), path


@pytest.mark.parametrize(
    ("ci", "rc", "said"),
    [("", 0, "1 skipped"), ("true", 1, "a required service is missing (CI=true)")],
)
def test_a_missing_browser_skips_on_a_laptop_and_fails_under_ci(
    tmp_path: Path, ci: str, rc: int, said: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "LAUNCHCTL_REQUIRE_SERVICES")}
    env.update(CI=ci, LAUNCHCTL_TEST_CHROMEDRIVER=str(tmp_path / "no-chromedriver"))
    node = "tests/ui/test_browser.py::test_an_out_of_range_value_is_refused_beside_its_input"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", node],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == rc, done.stdout
    assert said in done.stdout, done.stdout
    assert "no-chromedriver is missing (Debian's chromium-driver)" in done.stdout
    assert "run scripts/services.sh chromium" in done.stdout
