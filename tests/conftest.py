"""Shared fixtures: one real embedded broker (tansu) per test run, on a free port."""

from __future__ import annotations

import os
import tempfile

import pytest

from app.broker import embedded_broker
from module_gc import _collect_then_freeze_before_each_file  # noqa: F401 - autouse: GC walks only the current file's objects
from suite_order import pytest_collection_modifyitems, pytest_configure  # noqa: F401 - hooks: slow files first
from tokenmeter.settings import free_port

# Consumer groups of every service the tests start (in-process or as children, which inherit the environment):
# the embedded broker holds a new group's first JoinGroup for half the session timeout (5 s at the default 10 s)
# and a rejoin after a restart for about twice it (~18 s), so a shorter session makes every start and restart
# quicker. 4 s still leaves the 1 s heartbeats room on a loaded 2-core machine.
os.environ.setdefault("TOKENMETER_KAFKA_SESSION_TIMEOUT_SECONDS", "4")
# The pricing worker's start-up warm-up (streams/warm_up.py) only makes a first large batch cheaper: ~0.7 CPU-s per
# worker start, and the suite starts dozens. Off here; on in test_end_to_end.py (the real worker with it, as
# `up` runs it) and tests/streams/test_warm_up.py.
os.environ.setdefault("TOKENMETER_WORKER_WARM_UP", "false")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """"127.0.0.1:PORT" of a real Kafka-compatible broker with tokenmeter's topics (4 partitions)."""
    log_path = os.path.join(tempfile.gettempdir(), f"tokenmeter-test-broker-{os.getpid()}.log")
    with embedded_broker("127.0.0.1", free_port(), partitions=4, log_path=log_path) as bootstrap:
        yield bootstrap


@pytest.fixture(scope="module")
def own_broker() -> str:
    """A broker for one test file alone. Files that produce hostile records (non-JSON, non-UTF-8, 300-deep) to
    tokenmeter's real topics override `kafka_bootstrap` with it, so the session broker's topics, which other
    files read back whole, only ever hold what those files expect."""
    log_path = os.path.join(tempfile.gettempdir(), f"tokenmeter-test-broker-{os.getpid()}-own.log")
    with embedded_broker("127.0.0.1", free_port(), partitions=4, log_path=log_path) as bootstrap:
        yield bootstrap


def pytest_setup_options():
    """Headless Chromium for dash_duo, whether or not `--headless` is passed (CI and laptops alike)."""
    import shutil

    from selenium.webdriver.chrome.options import Options

    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--no-first-run", "--window-size=1400,1000",
                # Chromium 156 preloads its omnibox popup (two WebUI pages in a renderer of their own) at every start:
                # a browser start cost 1.47 CPU-s with it, 0.67 without (docs/rounds/testing.md suiteB28). chromedriver
                # joins this list to its own (IgnoreDuplicateNavs,Prewarm).
                "--disable-features=WebUIOmniboxPopup,WebUIOmniboxAimPopup"):
        options.add_argument(arg)
    chromium = os.environ.get("DASH_TEST_CHROMEPATH") or shutil.which("chromium")
    if chromium:
        options.binary_location = chromium
    return options
