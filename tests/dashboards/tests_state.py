"""State one test of tests/dashboards/test_shared_browser.py leaves for the next (a module of its own, so it is the
same object whichever way pytest imports the test file)."""

LEFT: dict = {}
