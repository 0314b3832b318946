"""Dashboard tests use the headless Chromium options from tests/conftest.py.

dash_duo's threaded server takes ports from one class counter that starts at 58050 in every process, so the four
xdist workers asked for the same ports: a start found its port taken, retried the next two and gave up ("threaded
server failed to start", seen in a CI run and in a loaded `-n 4` run of tests/dashboards). Each test's server
starts on a port the OS just handed out instead."""

from __future__ import annotations

import pytest

from tokenmeter.settings import free_port


@pytest.fixture(autouse=True)
def _dash_server_port():
    from dash.testing.application_runners import BaseDashRunner

    BaseDashRunner._next_port = free_port()  # noqa: SLF001 - the runner has no port option for dash_duo.start_server
    yield


# One Chromium per test file instead of one per test ---------------------------------------------------------------
# dash's `dash_duo` starts a Chromium (and its chromedriver) for every test and quits it after: the browser's own
# processes (main, GPU, network, zygote, driver) cost ~0.6 CPU-s per start (docs/rounds/testing.md "suite3"). Here the
# browser tests of a file get the same browser, handed over as a fresh one would be: one tab on
# about:blank, no cookies (the login's session cookie is per host, not per port), the last server's storage cleared,
# the default window size, an empty console log and downloads going to this test's own directory.
WINDOW_SIZE = (1400, 1000)  # tests/conftest.py's --window-size


@pytest.fixture(scope="module")  # not the session: an idle Chromium still uses ~0.005 CPU-s a second
def _one_chromium():
    held: dict = {}
    yield held
    driver = held.pop("driver", None)
    if driver is not None:
        driver.quit()


def _hand_over(driver, download_path: str) -> None:
    """The browser as a new one starts: what a test changes (tabs, page, cookies, size, log, downloads) reset."""
    handles = driver.window_handles
    for handle in handles[1:]:
        driver.switch_to.window(handle)
        driver.close()
    driver.switch_to.window(handles[0])
    driver.get("about:blank")
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    driver.set_window_size(*WINDOW_SIZE)
    driver.implicitly_wait(2)
    driver.get_log("browser")  # drained: a test's get_logs() sees its own page's messages only
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": download_path})


@pytest.fixture
def dash_duo(request, dash_thread_server, tmpdir, _one_chromium):
    """dash's `dash_duo` (same server thread, same options and helpers) on the file's one browser."""
    from dash.testing.composite import DashComposite
    from selenium.common.exceptions import WebDriverException

    class SharedBrowserDuo(DashComposite):
        def _try_get_webdriver(self):
            driver = _one_chromium.get("driver")
            if driver is not None:
                try:
                    _hand_over(driver, self.download_path)
                    return driver
                except WebDriverException:  # the last test left it broken (crashed tab, dead driver): a new one
                    _one_chromium.pop("driver")
                    try:
                        driver.quit()
                    except WebDriverException:
                        pass
            driver = _one_chromium["driver"] = super()._try_get_webdriver()
            _hand_over(driver, self.download_path)
            return driver

        def __exit__(self, exc_type, exc_val, traceback):
            try:  # what this server's pages stored goes with it; the browser stays for the next test
                if self.server.started:
                    self.driver.execute_cdp_cmd("Storage.clearDataForOrigin", {
                        "origin": self.server.url.rstrip("/"), "storageTypes": "all"})
                self.driver.get("about:blank")
            except WebDriverException:
                _one_chromium.pop("driver", None)
                try:
                    self.driver.quit()
                except WebDriverException:
                    pass

    options = request.config
    with SharedBrowserDuo(
        server=dash_thread_server, browser=options.getoption("webdriver"), remote=options.getoption("remote"),
        remote_url=options.getoption("remote_url"), headless=options.getoption("headless"),
        options=options.hook.pytest_setup_options(), download_path=tmpdir.mkdir("download").strpath,
        percy_assets_root=options.getoption("percy_assets"), percy_finalize=options.getoption("nopercyfinalize"),
        pause=options.getoption("pause"),
    ) as duo:
        yield duo
