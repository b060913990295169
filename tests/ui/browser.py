"""A real Chromium for the web view's tests: Debian's ``chromium`` driven through Debian's
``chromium-driver`` by Selenium 4. Nothing is downloaded: the driver's path is given, so
Selenium Manager never runs. ``scripts/services.sh chromium`` installs both.

``browser`` (one headless Chromium per test module) and ``page`` (that browser, logged in
to this test's ``ui_server``, cookies of earlier servers cleared) are fixtures; a test
module imports ``browser_fixture`` and ``page_fixture`` to use them. Without Chromium the
tests skip with a reason naming ``scripts/services.sh``, which tests/conftest.py turns
into a failure under CI.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import wait_for

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

    from tests.ui.conftest import UiServer

# Tests may point these elsewhere (to prove that a missing browser fails under CI).
CHROMIUM = Path(os.environ.get("LAUNCHCTL_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("LAUNCHCTL_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))

# Without the network flags Chromium hangs at start on a closed network; the throttling
# flags keep a second window's server-sent events and timers running at full speed.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--window-size=1400,900",
)


def missing() -> str | None:
    """Why no browser can be driven here, or None."""
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -e '.[test]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (Debian's {package}); run scripts/services.sh chromium"
    return None


def start_chromium(user_data_dir: Path, window_size: str | None = None) -> WebDriver:
    """A new headless Chromium with an empty profile in ``user_data_dir``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        if window_size and flag.startswith("--window-size="):
            flag = f"--window-size={window_size}"
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    # executable_path given: Selenium skips Selenium Manager (no lookup, no download).
    service = Service(executable_path=str(CHROMEDRIVER))
    return webdriver.Chrome(service=service, options=options)


class Page:
    """One browser on one server: open pages, read them, wait on them."""

    def __init__(self, driver: WebDriver, server: UiServer) -> None:
        self.driver = driver
        self.server = server

    def login(self) -> None:
        """Open the URL the server printed: it sets the cookie and sends us to ``/``."""
        self.driver.get(f"{self.server.base_url}/?token={self.server.token}")
        wait_for(
            lambda: self.driver.current_url.rstrip("/") == self.server.base_url,
            what="the token URL to redirect to /",
        )

    def open(self, path: str) -> None:
        self.driver.get(self.server.url(path))

    def mark(self) -> None:
        """Tag this document; ``not_reloaded()`` is true while the same document shows."""
        self.driver.execute_script("window.__launchctl_marker = 1;")

    def not_reloaded(self) -> bool:
        from selenium.common.exceptions import WebDriverException

        try:
            return bool(self.driver.execute_script("return window.__launchctl_marker === 1;"))
        except WebDriverException:  # asked while the next document loads: not the same one
            return False

    def css(self, selector: str, timeout: float = 30) -> Any:
        """The first element matching ``selector``, once there is one; on a timeout the
        error shows the page's address and the start of its text."""
        try:
            found = self.wait(lambda: self.all(selector), what=selector, timeout=timeout)
            return found[0]
        except AssertionError as exc:
            shown = self.text("body")[:500]
            raise AssertionError(f"{exc} on {self.driver.current_url}:\n{shown}") from None

    def all(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def text(self, selector: str) -> str:
        """The text of the first element matching ``selector`` ('' when none, or when the
        page changed under the question: a live update or the next page replaced it)."""
        from selenium.common.exceptions import StaleElementReferenceException

        try:
            found = self.all(selector)
            return str(found[0].text) if found else ""
        except StaleElementReferenceException:
            return ""

    def attr(self, selector: str, name: str) -> str | None:
        """An attribute of the first element matching ``selector`` (None as text's '')."""
        from selenium.common.exceptions import StaleElementReferenceException

        try:
            found = self.all(selector)
            return found[0].get_attribute(name) if found else None
        except StaleElementReferenceException:
            return None

    def wait(self, condition: Callable[[], Any], what: str, timeout: float = 30) -> Any:
        return wait_for(condition, timeout=timeout, interval=0.05, what=what)

    def wait_text(self, selector: str, want: str, timeout: float = 30) -> None:
        self.wait(
            lambda: self.text(selector).strip() == want,
            what=f"{selector} to read {want!r} (it reads {self.text(selector)!r})",
            timeout=timeout,
        )

    def alert_text(self) -> str | None:
        """The text of an open alert, or None: a script that ran would have opened one."""
        from selenium.common.exceptions import NoAlertPresentException

        try:
            return str(self.driver.switch_to.alert.text)
        except NoAlertPresentException:
            return None

    def source(self) -> str:
        return str(self.driver.page_source)


@pytest.fixture(name="browser", scope="module")
def browser_fixture() -> Iterator[WebDriver]:
    """One headless Chromium for the whole module, with an empty profile."""
    why = missing()
    if why:
        pytest.skip(f"no browser to drive: {why}")
    with tempfile.TemporaryDirectory(prefix="launchctl-chromium-") as profile:
        driver = start_chromium(Path(profile))
        try:
            yield driver
        finally:
            driver.quit()


@pytest.fixture(name="page")
def page_fixture(browser: WebDriver, ui_server: UiServer) -> Page:
    """The module's browser, logged in to this test's server (fresh cookies, one window)."""
    for handle in browser.window_handles[1:]:
        browser.switch_to.window(handle)
        browser.close()
    browser.switch_to.window(browser.window_handles[0])
    browser.execute_cdp_cmd("Network.clearBrowserCookies", {})
    p = Page(browser, ui_server)
    p.login()
    return p
