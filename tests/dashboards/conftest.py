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
