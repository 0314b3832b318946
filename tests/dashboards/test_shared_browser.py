"""The browser tests of one file share one Chromium (tests/dashboards/conftest.py `dash_duo`), and each test still
gets it as a new one: the second test below finds none of what the first left (a cookie, local storage on the same
origin, a second tab, another window size, console messages). Run in file order."""

from __future__ import annotations

import pytest
from dash import Dash, html

pytestmark = pytest.mark.browser  # drives Chromium: `-m "not browser"` leaves it out
WINDOW = {"width": 1400, "height": 1000}
LEFT: dict = {}  # what the first test leaves for the second


def _app() -> Dash:
    app = Dash(__name__)
    app.layout = html.Div("shared", id="shared")
    return app


def test_a_test_leaves_cookies_storage_tabs_size_and_logs_behind(dash_duo):
    from dash.testing.application_runners import BaseDashRunner

    port = BaseDashRunner._next_port  # noqa: SLF001 - tests/dashboards/conftest.py picks it for this test
    dash_duo.start_server(_app())
    dash_duo.wait_for_text_to_equal("#shared", "shared")
    driver = dash_duo.driver
    driver.execute_script("document.cookie = 'left=1; path=/'; localStorage.setItem('left', '1');"
                          " console.error('left behind'); window.open('about:blank');")
    driver.set_window_size(800, 600)
    assert driver.get_cookies() and len(driver.window_handles) == 2
    LEFT.update(session=driver.session_id, port=port)


def test_the_next_test_gets_the_same_browser_as_a_new_one(dash_duo):
    from dash.testing.application_runners import BaseDashRunner

    assert LEFT, "runs after the test above, in file order"
    BaseDashRunner._next_port = LEFT["port"]  # noqa: SLF001 - the same origin as the test before
    dash_duo.start_server(_app())
    dash_duo.wait_for_text_to_equal("#shared", "shared")
    driver = dash_duo.driver
    assert driver.session_id == LEFT["session"]  # one Chromium for both tests
    assert dash_duo.server.url.rstrip("/").endswith(f":{LEFT['port']}")
    assert driver.get_cookies() == []
    assert driver.execute_script("return localStorage.getItem('left')") is None
    assert len(driver.window_handles) == 1
    assert {k: driver.get_window_size()[k] for k in WINDOW} == WINDOW
    assert dash_duo.get_logs() == []


def test_chromium_starts_without_its_omnibox_popup_pages(dash_duo):
    """tests/conftest.py: headless Chromium 156 preloads its omnibox popup, two WebUI pages in a renderer of their own,
    ~0.8 of the ~1.5 CPU-s a browser start cost; the tests type into no omnibox. A Chromium that renames the features
    fails here, naming the pages."""
    targets = dash_duo.driver.execute_cdp_cmd("Target.getTargets", {})["targetInfos"]
    assert [t["url"] for t in targets if t["type"] != "page"] == []
