"""dash_duo's text waits with a cheap read of the page between dash's own checks.

dash's `wait_for_text_to_equal` / `wait_for_contains_text` poll every 0.5 s with find_element (which waits out the
2 s implicit wait while the element is missing), `.text` twice (once as a logger.debug argument) and
get_attribute("value"). Selenium's visible-text and attribute atoms are large scripts that walk the element's
subtree: 100 such polls cost 2.2 CPU-s of Chromium and chromedriver, 100 one-line scripts 0.26 (docs/testing.md
suiteB28), paid for every half second a test waits on a page.

Here a poll first runs one small script: could the element's text or value hold the expected text at all (its
textContent or value, whitespace removed, contains the expected text, whitespace removed)? Only then, and at
least every FULL_CHECK_S whatever the script says, dash's own condition runs. The verdict is always dash's (the
same atoms, the same timeout); the quick read only skips polls it could not have passed: `.text` is a part of
textContent with whitespace added, except where CSS rewrites text (text-transform), which the periodic full check
still finds.
"""

from __future__ import annotations

import re
import time

FULL_CHECK_S = 2.0
_MAY_MATCH = ("const el = document.querySelector(arguments[0]); if (!el) return false;"
              "const squash = s => (s === null || s === undefined ? '' : String(s)).replace(/\\s+/g, '');"
              "return [el.textContent, el.value, el.getAttribute('value')].some(s => squash(s).includes(arguments[1]));")


class QuickGate:
    """A WebDriverWait condition: `condition` (dash's) behind the quick read for `selector` and `text`."""

    def __init__(self, condition, selector: str, text: str):
        self.condition = condition
        self.selector = selector
        self.squashed = re.sub(r"\s+", "", str(text))
        self.next_full_check = 0.0  # the first poll is dash's own

    def __call__(self, driver):
        from selenium.common.exceptions import WebDriverException

        now = time.monotonic()
        if now < self.next_full_check:
            try:
                if not driver.execute_script(_MAY_MATCH, self.selector, self.squashed):
                    return False
            except WebDriverException:  # a page being replaced: as dash's condition answers then
                return False
        self.next_full_check = now + FULL_CHECK_S
        return self.condition(driver)


class QuickTextWaits:
    """Mixed into dash_duo's class: its two text waits with the quick read (same arguments, same messages)."""

    def wait_for_text_to_equal(self, selector, text, timeout=None):
        from dash.testing.wait import text_to_equal

        method = text_to_equal(selector, text, timeout or self.wait_timeout)
        return self._wait_for(method=QuickGate(method, selector, text), timeout=timeout, msg=method.message)

    def wait_for_contains_text(self, selector, text, timeout=None):
        from dash.testing.wait import contains_text

        method = contains_text(selector, text, timeout or self.wait_timeout)
        return self._wait_for(method=QuickGate(method, selector, text), timeout=timeout, msg=method.message)
